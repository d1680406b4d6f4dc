"""The stub LLM as a plain ASGI application (served by hypercorn, see :mod:`llm_stub.server`).

Routes:

* ``POST /v1/chat/completions`` - plain JSON, or SSE chunks when ``stream`` is true
* ``GET /v1/models`` and ``GET /v1/models/{id}``
* ``GET /_stub/stats`` (``?recent=N``), ``POST /_stub/faults`` ``{"next": [...]}``,
  ``POST /_stub/reset``, ``GET|POST /_stub/options``

Every error body has OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``.
Faults (latency, 500, 429, quota, hang, reset, malformed, cut, broken_edit) apply to chat
completions only. ``cut`` starts the real answer (a 200, plain or streamed) and breaks the
connection half-way through its body; ``broken_edit`` answers a well-formed 200 whose edit
blocks are broken (the last block's ``>>>>>>> REPLACE`` marker is missing).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
from typing import Any

from codeagent.prompts import parse_user_prompt
from llm_stub import shapes
from llm_stub.abort import abort_request, wait_disconnect
from llm_stub.admin import handle_admin
from llm_stub.asgi import (
    BodyTooLarge,
    ClientGone,
    Receive,
    Scope,
    Send,
    answer_early,
    read_body,
    send_bytes,
    send_json,
)
from llm_stub.options import ANSWER_FAULTS
from llm_stub.shapes import bad_request
from llm_stub.state import StubState
from llm_stub.stats import RequestRecord

log = logging.getLogger(__name__)


def _prompt_key(messages: list[Any]) -> str:
    """A digest of a request's messages: what ``draws = "prompt"`` keys its random draws by."""
    canonical = json.dumps(messages, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def break_edit_blocks(text: str) -> str:
    """``text`` with its last ``>>>>>>> REPLACE`` marker dropped (no block: a dangling SEARCH added)."""
    marker = ">>>>>>> REPLACE"
    at = text.rfind(marker)
    if at < 0:
        return text + "\nfile.txt\n<<<<<<< SEARCH\nold\n=======\nnew\n"
    return text[:at] + text[at + len(marker) :].lstrip("\n")


def _last_user_text(messages: list[Any]) -> str | None:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return shapes.message_text(message)
    return None


class StubApp:
    """The ASGI callable."""

    def __init__(self, state: StubState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if path.startswith("/_stub/"):
            await handle_admin(self.state, scope, receive, send)
            return
        client = scope.get("client") or ("", 0)
        peer = f"{client[0]}:{client[1]}"
        record = self.state.begin(method, path, scope.get("http_version", "?"), peer)
        try:
            await self._api(scope, receive, send, record)
        except ClientGone:
            self.state.stats.client_disconnects += 1
        except BodyTooLarge:
            record.status = 413
            await answer_early(receive, send, 413, shapes.TOO_LARGE)
        finally:
            self.state.end(record)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.state.stopping.set()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _reply(self, send: Send, record: RequestRecord, status: int, data: Any, **extra: str) -> None:
        record.status = status
        await send_json(send, status, data, {"x-request-id": f"req_stub_{record.seq}", **extra})

    async def _api(self, scope: Scope, receive: Receive, send: Send, record: RequestRecord) -> None:
        path, method = record.path.rstrip("/"), record.method
        if path == "/v1/chat/completions":
            if method != "POST":
                await self._reply(send, record, 405, bad_request(f"Method {method} not allowed on {path}."))
                return
            await self._chat(scope, receive, send, record)
            return
        await read_body(receive)
        model = self.state.options.model
        if path == "/v1/models" and method == "GET":
            await self._reply(send, record, 200, shapes.models_list(model))
        elif path == f"/v1/models/{model}" and method == "GET":
            await self._reply(send, record, 200, shapes.models_list(model)["data"][0])
        elif path.startswith("/v1/models/") and method == "GET":
            name = path.removeprefix("/v1/models/")
            body = bad_request(f"The model '{name}' does not exist", "model", "model_not_found")
            await self._reply(send, record, 404, body)
        else:
            body = bad_request(f"Unknown request URL: {method} {record.path}.", code="unknown_url")
            await self._reply(send, record, 404, body)

    async def _pause(self, seconds: float, receive: Receive, until: asyncio.Event | None = None) -> str:
        """Wait ``seconds`` (or until ``until`` is set); ``"done"``, or ``"gone"`` (client left) /
        ``"stopping"`` (server stops)."""
        if seconds <= 0:
            return "done"
        gone = asyncio.ensure_future(wait_disconnect(receive))
        stopping = asyncio.ensure_future(self.state.stopping.wait())
        waits = {gone, stopping}
        if until is not None:
            waits.add(asyncio.ensure_future(until.wait()))
        try:
            done, _ = await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        if gone in done:
            return "gone"
        return "stopping" if stopping in done else "done"

    async def _chat(self, scope: Scope, receive: Receive, send: Send, record: RequestRecord) -> None:
        raw = await read_body(receive)
        try:
            payload = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            await self._reply(send, record, 400, bad_request(f"The request body is not valid JSON: {exc}"))
            return
        messages = payload.get("messages") if isinstance(payload, dict) else None
        if not isinstance(messages, list) or not messages:
            body = bad_request("'messages' must be a non-empty array.", "messages", "invalid_value")
            await self._reply(send, record, 400, body)
            return
        user_text = _last_user_text(messages)
        if user_text is None:
            body = bad_request("'messages' holds no message with role 'user'.", "messages", "invalid_value")
            await self._reply(send, record, 400, body)
            return
        record.stream = bool(payload.get("stream"))
        record.todo_id = parse_user_prompt(user_text)[0] or None
        state = self.state
        if state.stopping.is_set():
            await self._reply(send, record, 503, shapes.SHUTTING_DOWN)
            return
        key = _prompt_key(messages) if state.options.draws == "prompt" else ""
        fault, latency_s = state.faults.draw(key)
        record.fault = fault
        record.latency_ms = round(latency_s * 1000.0, 3)
        state.stats.drew_latency(latency_s)
        if state.held():  # until enough requests are in flight together (hold_until_in_flight)
            outcome = await self._pause(state.options.hold_timeout_s, receive, state.hold_open)
            if outcome == "gone":
                raise ClientGone
        outcome = await self._pause(latency_s, receive)
        if outcome == "gone":
            raise ClientGone
        if fault == "hang":
            outcome = await self._pause(state.options.hang_s, receive)
            if outcome == "gone":
                raise ClientGone
            if outcome == "stopping":
                await self._reply(send, record, 503, shapes.SHUTTING_DOWN)
                return
        elif fault is not None and fault not in ANSWER_FAULTS:
            await self._fault(scope, receive, send, record, fault)
            return
        answer = state.rules.answer(user_text)
        record.rule = answer.rule or "(none)"
        text = break_edit_blocks(answer.text) if fault == "broken_edit" else answer.text
        model = str(payload.get("model") or state.options.model)
        completion_id = f"chatcmpl-stub-{record.seq}"
        usage = shapes.usage(messages, text)
        if record.stream:
            options = payload.get("stream_options")
            with_usage = isinstance(options, dict) and bool(options.get("include_usage"))
            chunks = shapes.stream_chunks(completion_id, model, text, usage if with_usage else None)
            events = [shapes.sse_event(c) for c in chunks]
            if fault == "cut":
                await self._cut(scope, receive, send, record, events)
                return
            await self._stream(send, record, events)
            return
        body = shapes.completion(completion_id, model, text, usage)
        if fault == "cut":
            await self._cut(scope, receive, send, record, [json.dumps(body).encode()])
            return
        await self._reply(send, record, 200, body)

    async def _cut(
        self, scope: Scope, receive: Receive, send: Send, record: RequestRecord, parts: list[bytes]
    ) -> None:
        """Start a 200 with the answer, send half of its body, then break the connection (or stream)."""
        whole = b"".join(parts)
        if len(parts) > 1:  # a stream: whole events up to the middle of the answer
            half, sent = b"", 0
            while sent < len(parts) // 2:
                half += parts[sent]
                sent += 1
            headers = [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-cache"),
            ]
        else:
            half = whole[: max(1, len(whole) // 2)]
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(whole)).encode())]
        record.status = 200
        headers.append((b"x-request-id", f"req_stub_{record.seq}".encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": half, "more_body": True})
        await asyncio.sleep(0.02)  # let the half reach the socket: an abort drops what is still buffered
        if await abort_request(send, scope.get("http_version", "1.1")):
            try:
                async with asyncio.timeout(2.0):
                    await wait_disconnect(receive)
            except TimeoutError:
                log.debug("no http.disconnect within 2s after cutting request %d", record.seq)
            return
        log.warning("this server cannot break a response; ending it short instead")
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _stream(self, send: Send, record: RequestRecord, events: list[bytes]) -> None:
        record.status = 200
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-request-id", f"req_stub_{record.seq}".encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for event in events:
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": shapes.sse_event("[DONE]"), "more_body": False})

    async def _fault(
        self, scope: Scope, receive: Receive, send: Send, record: RequestRecord, fault: str
    ) -> None:
        options = self.state.options
        if fault == "500":
            await self._reply(send, record, 500, shapes.SERVER_ERROR)
        elif fault == "429":
            seconds = options.retry_after_s
            headers = {"retry-after": str(math.ceil(seconds)), "retry-after-ms": str(round(seconds * 1000))}
            await self._reply(send, record, 429, shapes.RATE_LIMITED, **headers)
        elif fault == "quota":
            await self._reply(send, record, 429, shapes.QUOTA_EXCEEDED)
        elif fault == "malformed":
            record.status = 200
            prefix = f'{{"id":"chatcmpl-stub-{record.seq}","object":"chat.completion","choices":[{{"index":0,'
            if record.stream:
                body = f"data: {prefix}\n\ndata: [DONE]\n\n".encode()
                await send_bytes(send, 200, body, "text/event-stream; charset=utf-8")
            else:
                await send_bytes(send, 200, prefix.encode(), "application/json")
        elif fault == "reset":
            if await abort_request(send, scope.get("http_version", "1.1")):
                try:
                    async with asyncio.timeout(2.0):
                        await wait_disconnect(receive)
                except TimeoutError:
                    log.debug("no http.disconnect within 2s after resetting request %d", record.seq)
                return
            log.warning("this server cannot reset a request; sending a truncated response instead")
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4096")]}
            )
            await send({"type": "http.response.body", "body": b'{"id":', "more_body": True})
