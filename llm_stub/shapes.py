"""OpenAI-shaped JSON bodies: completions, stream chunks, model lists, errors, usage."""

from __future__ import annotations

import json
import math
import time
from typing import Any

from llm_stub.asgi import MAX_BODY_BYTES


def count_tokens(text: str) -> int:
    """A deterministic token estimate (about four characters a token)."""
    return math.ceil(len(text) / 4) if text else 0


def message_text(message: Any) -> str:
    """The text of one chat message; content parts (``[{"type": "text", ...}]``) are joined."""
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def usage(messages: list[Any], reply: str) -> dict[str, int]:
    """The ``usage`` object: prompt, completion and total token counts."""
    prompt = sum(count_tokens(message_text(m)) + 4 for m in messages)
    completion = count_tokens(reply)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion(completion_id: str, model: str, reply: str, usage_obj: dict[str, int]) -> dict[str, Any]:
    """A whole ``chat.completion`` object with one choice."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_codeagent_stub",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": usage_obj,
    }


def _chunk(completion_id: str, model: str, created: int, choices: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_codeagent_stub",
        "choices": choices,
    }


def split_reply(reply: str, size: int = 48) -> list[str]:
    """Pieces of the reply for streaming: whole lines, long lines cut every ``size`` characters."""
    pieces: list[str] = []
    for line in reply.splitlines(keepends=True):
        pieces.extend(line[i : i + size] for i in range(0, len(line), size))
    return pieces


def stream_chunks(
    completion_id: str, model: str, reply: str, usage_obj: dict[str, int] | None
) -> list[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of a streamed answer (``[DONE]`` not included).

    The first chunk carries the role, the last one ``finish_reason``; when
    ``usage_obj`` is given (``stream_options.include_usage``) a final chunk with
    no choices carries it, as OpenAI does.
    """
    created = int(time.time())
    chunks = [
        _chunk(
            completion_id,
            model,
            created,
            [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
        )
    ]
    for piece in split_reply(reply):
        chunks.append(
            _chunk(
                completion_id,
                model,
                created,
                [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
            )
        )
    chunks.append(_chunk(completion_id, model, created, [{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    if usage_obj is not None:
        last = _chunk(completion_id, model, created, [])
        last["usage"] = usage_obj
        chunks.append(last)
    return chunks


def sse_event(data: dict[str, Any] | str) -> bytes:
    """One server-sent event line pair: ``data: ...`` and a blank line."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


def models_list(model: str) -> dict[str, Any]:
    """The ``GET /v1/models`` body."""
    return {
        "object": "list",
        "data": [{"id": model, "object": "model", "created": 1700000000, "owned_by": "codeagent-stub"}],
    }


def error_body(
    message: str, type_: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """An OpenAI error body: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


SERVER_ERROR = error_body(
    "The server had an error while processing your request (injected by codeagent llm-stub).",
    "server_error",
)
RATE_LIMITED = error_body(
    "Rate limit reached for requests (injected by codeagent llm-stub). Please try again later.",
    "requests",
    code="rate_limit_exceeded",
)
QUOTA_EXCEEDED = error_body(
    "You exceeded your current quota, please check your plan and billing details "
    "(injected by codeagent llm-stub).",
    "insufficient_quota",
    code="insufficient_quota",
)
SHUTTING_DOWN = error_body("The stub server is shutting down.", "server_error", code="server_shutting_down")
TOO_LARGE = error_body(
    f"The request body is over {MAX_BODY_BYTES // 2**20} MiB.",
    "invalid_request_error",
    code="request_too_large",
)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """An ``invalid_request_error`` body."""
    return error_body(message, "invalid_request_error", param=param, code=code)
