"""The OpenAI-compatible surface over real loopback HTTP/1.1 and HTTP/2, and the admin endpoints."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from llm_stub import StubOptions, StubServer
from tests.stub.helpers import chat_body, reply_text

APPEND = 'append a line "hello" to file notes.txt'


@pytest.fixture(params=[False, True], ids=["http1.1", "http2"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    http2: bool = request.param
    async with httpx.AsyncClient(http1=not http2, http2=http2, timeout=10) as c:
        yield c


def admin(stub: StubServer) -> str:
    return stub.url.removesuffix("/v1") + "/_stub"


def assert_error_shape(body: dict[str, Any]) -> dict[str, Any]:
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    return error  # type: ignore[no-any-return]


async def test_chat_completion(stub: StubServer, client: httpx.AsyncClient) -> None:
    response = await client.post(f"{stub.url}/chat/completions", json=chat_body(APPEND, {"notes.txt": "a\n"}))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "stub-coder"
    [choice] = body["choices"]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    assert "<<<<<<< SEARCH\na\n=======\na\nhello\n>>>>>>> REPLACE" in choice["message"]["content"]
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    version = {"HTTP/1.1": "1.1", "HTTP/2": "2"}[response.http_version]
    assert stub.stats()["by_http_version"] == {version: 1}


async def test_streamed_chat_completion(stub: StubServer, client: httpx.AsyncClient) -> None:
    body = chat_body(APPEND, {"notes.txt": "a\n"}, stream=True, stream_options={"include_usage": True})
    async with client.stream("POST", f"{stub.url}/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line async for line in response.aiter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    plain = await client.post(f"{stub.url}/chat/completions", json=chat_body(APPEND, {"notes.txt": "a\n"}))
    assert text == reply_text(plain.json())
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    assert stub.stats()["recent"][0]["stream"] is True


async def test_stream_without_usage_option_has_no_usage_chunk(
    stub: StubServer, client: httpx.AsyncClient
) -> None:
    response = await client.post(f"{stub.url}/chat/completions", json=chat_body('say "hi"', stream=True))
    events = [line for line in response.text.split("\n\n") if line]
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert all(c["choices"] for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "hi"


async def test_models(stub: StubServer, client: httpx.AsyncClient) -> None:
    response = await client.get(f"{stub.url}/models")
    assert response.status_code == 200
    assert response.json()["object"] == "list"
    assert [m["id"] for m in response.json()["data"]] == ["stub-coder"]
    one = await client.get(f"{stub.url}/models/stub-coder")
    assert one.json()["id"] == "stub-coder"
    missing = await client.get(f"{stub.url}/models/gpt-9")
    assert missing.status_code == 404
    assert assert_error_shape(missing.json())["code"] == "model_not_found"


@pytest.mark.parametrize(
    ("method", "path", "content", "status", "param"),
    [
        ("POST", "/chat/completions", b"{not json", 400, None),
        ("POST", "/chat/completions", b'{"model": "x"}', 400, "messages"),
        ("POST", "/chat/completions", b'{"messages": []}', 400, "messages"),
        ("POST", "/chat/completions", b'{"messages": [{"role": "system", "content": "x"}]}', 400, "messages"),
        ("GET", "/chat/completions", b"", 405, None),
        ("POST", "/embeddings", b"{}", 404, None),
    ],
)
async def test_errors_have_openai_shape(
    stub: StubServer,
    client: httpx.AsyncClient,
    method: str,
    path: str,
    content: bytes,
    status: int,
    param: str | None,
) -> None:
    response = await client.request(method, f"{stub.url}{path}", content=content)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = assert_error_shape(response.json())
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


async def test_content_parts_are_read_as_text(stub: StubServer, client: httpx.AsyncClient) -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": [{"type": "text", "text": 'reply "parts"'}]}],
    }
    response = await client.post(f"{stub.url}/chat/completions", json=body)
    assert reply_text(response.json()) == "parts"
    assert response.json()["model"] == "m"


async def test_admin_faults_stats_reset_and_options(stub: StubServer, client: httpx.AsyncClient) -> None:
    queued = await client.post(f"{admin(stub)}/faults", json={"next": ["429", "ok", "500"]})
    assert queued.json() == {"queued_faults": ["429", "ok", "500"]}
    statuses = [
        (await client.post(f"{stub.url}/chat/completions", json=chat_body('say "x"'))).status_code
        for _ in range(4)
    ]
    assert statuses == [429, 200, 500, 200]
    stats = (await client.get(f"{admin(stub)}/stats", params={"recent": "2"})).json()
    assert stats["requests_total"] == 4
    assert stats["by_fault"] == {"429": 1, "500": 1}
    assert stats["by_status"] == {"429": 1, "200": 2, "500": 1}
    assert stats["connections_seen"] == 1
    assert stats["in_flight"] == 0 and stats["max_in_flight"] == 1
    assert [r["seq"] for r in stats["recent"]] == [3, 4]
    assert stats == stub.stats(recent=2)
    bad = await client.post(f"{admin(stub)}/faults", json={"next": ["418"]})
    assert bad.status_code == 400 and "unknown fault kind '418'" in assert_error_shape(bad.json())["message"]
    await client.post(f"{admin(stub)}/faults", json={"next": ["500"]})
    assert (await client.post(f"{admin(stub)}/reset")).json() == {"reset": True}
    stats = stub.stats()
    assert stats["requests_total"] == 0 and stats["queued_faults"] == [] and stats["recent"] == []
    changed = await client.post(f"{admin(stub)}/options", json={"latency_ms": 5, "faults": "500,quota"})
    assert changed.json()["latency_ms"] == 5.0 and changed.json()["faults"] == ["500", "quota"]
    assert stub.options.faults == ("500", "quota")
    assert (await client.get(f"{admin(stub)}/options")).json()["latency_ms"] == 5.0
    for wrong in ({"latency_ms": -1}, {"colour": "red"}, {"fail_rate": "lots"}, {"seed": 1.5}):
        response = await client.post(f"{admin(stub)}/options", json=wrong)
        assert response.status_code == 400, wrong
    assert (await client.get(f"{admin(stub)}/nothing")).status_code == 404
    assert stub.stats()["requests_total"] == 0  # admin calls are not counted


async def test_one_stub_serves_both_versions_on_one_port(stub: StubServer) -> None:
    async with httpx.AsyncClient() as h1, httpx.AsyncClient(http1=False, http2=True) as h2:
        r1 = await h1.get(f"{stub.url}/models")
        r2 = await h2.get(f"{stub.url}/models")
    assert (r1.http_version, r2.http_version) == ("HTTP/1.1", "HTTP/2")
    assert stub.stats()["by_http_version"] == {"1.1": 1, "2": 1}
    assert [r["http_version"] for r in stub.stats()["recent"]] == ["1.1", "2"]


async def test_model_name_is_an_option() -> None:
    with StubServer(StubOptions(model="tiny")) as stub:
        async with httpx.AsyncClient() as client:
            listed = (await client.get(f"{stub.url}/models")).json()
            answered = (
                await client.post(
                    f"{stub.url}/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}
                )
            ).json()
    assert [m["id"] for m in listed["data"]] == ["tiny"]
    assert answered["model"] == "tiny"
