"""MetricsCollector exposition (parsed back) and structured logs with correlation ids."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

from codeagent.context import correlation_id
from core_async.kernel.logs import (
    CorrelationFilter,
    JsonLinesFormatter,
    configure_logging,
    correlation,
    wants_json,
)
from core_async.kernel.metrics import MetricsCollector


def families(collector: MetricsCollector) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(collector.render().decode())}


async def test_timed_operations_land_in_per_component_histograms() -> None:
    metrics = MetricsCollector()
    with metrics.timed("llm", "chat"):
        await asyncio.sleep(0.01)
    with pytest.raises(ValueError), metrics.timed("git", "commit"):
        raise ValueError("boom")

    async def cancelled() -> None:
        with metrics.timed("files", "write_many"):
            await asyncio.sleep(3600)

    task = asyncio.create_task(cancelled())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    metrics.todo_step("plan", 0.2)
    metrics.todo_finished("ws", "done")
    metrics.request("GET", "/v1/todos", 200, 0.003)

    found = families(metrics)
    latency = found["codeagent_component_latency_seconds"]
    counts = {
        (s.labels["component"], s.labels["operation"]): s.value
        for s in latency.samples  # type: ignore[attr-defined]
        if s.name.endswith("_count")
    }
    assert counts == {("llm", "chat"): 1, ("git", "commit"): 1, ("files", "write_many"): 1}
    llm_sum = next(
        s.value for s in latency.samples if s.name.endswith("_sum") and s.labels["component"] == "llm"
    )  # type: ignore[attr-defined]
    assert llm_sum >= 0.005
    outcomes = {
        (s.labels["component"], s.labels["outcome"]): s.value
        for s in found["codeagent_component_operations"].samples  # type: ignore[attr-defined]
        if s.name.endswith("_total")
    }
    assert outcomes == {("llm", "ok"): 1, ("git", "error"): 1, ("files", "cancelled"): 1}
    assert found["codeagent_todo_step_seconds"].type == "histogram"  # type: ignore[attr-defined]
    assert found["codeagent_http_request_seconds"].type == "histogram"  # type: ignore[attr-defined]
    assert MetricsCollector().render() != metrics.render()  # one registry per collector


def test_json_lines_carry_the_correlation_id_and_extras() -> None:
    stream = io.StringIO()
    handler = configure_logging(json_lines=True, stream=stream)
    try:
        log = logging.getLogger("codeagent.test")
        with correlation("ws/t-0001", todo_id="t-0001", workspace="ws"):
            assert correlation_id.get() == "ws/t-0001"
            log.info("todo %s started", "t-0001", extra={"attempt": 2, "obj": object()})
        try:
            raise RuntimeError("kaput")
        except RuntimeError:
            log.exception("failed")
        assert correlation_id.get() is None
    finally:
        logging.getLogger().removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "todo t-0001 started"
    assert first["correlation_id"] == "ws/t-0001"
    assert first["todo_id"] == "t-0001" and first["workspace"] == "ws"
    assert first["attempt"] == 2 and first["obj"].startswith("<object")
    assert first["level"] == "INFO" and first["logger"] == "codeagent.test"
    assert second["correlation_id"] == "-" and "RuntimeError: kaput" in second["exception"]


def test_text_logs_and_the_format_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    first = configure_logging(json_lines=False, stream=stream)
    handler = configure_logging(json_lines=False, stream=stream)  # replaces the first, no duplicates
    try:
        assert first not in logging.getLogger().handlers
        with correlation("req-1"):
            logging.getLogger("codeagent.test").warning("hello")
    finally:
        logging.getLogger().removeHandler(handler)
    assert stream.getvalue().count("hello") == 1 and "[req-1] hello" in stream.getvalue()
    monkeypatch.setenv("CODEAGENT_LOG_FORMAT", "json")
    assert wants_json(None) and not wants_json(False)
    record = logging.makeLogRecord({"msg": "x"})
    assert CorrelationFilter().filter(record) and record.correlation_id == "-"  # type: ignore[attr-defined]
    assert json.loads(JsonLinesFormatter().format(record))["message"] == "x"
