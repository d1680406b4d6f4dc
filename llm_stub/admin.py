"""The ``/_stub/...`` admin endpoints: stats, scripted faults, reset, options."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from llm_stub import shapes
from llm_stub.asgi import (
    BodyTooLarge,
    ClientGone,
    Receive,
    Scope,
    Send,
    answer_early,
    read_body,
    send_json,
)
from llm_stub.options import options_view
from llm_stub.rules import RulesError
from llm_stub.shapes import bad_request
from llm_stub.state import StubState


async def handle_admin(state: StubState, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one ``/_stub/...`` request (not counted in the stats, never faulted)."""
    method: str = scope["method"]
    path: str = scope["path"]
    try:
        raw = await read_body(receive)
    except ClientGone:
        return
    except BodyTooLarge:
        await answer_early(receive, send, 413, shapes.TOO_LARGE)
        return
    try:
        data: Any = json.loads(raw) if raw.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        await send_json(send, 400, bad_request(f"The request body is not valid JSON: {exc}"))
        return
    route = (method, path.rstrip("/"))
    try:
        if route == ("GET", "/_stub/stats"):
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            recent = int(query.get("recent", ["50"])[0])
            by_todo = query.get("by_todo", ["0"])[0] not in ("", "0", "false")
            view = state.stats.view(recent, by_todo=by_todo)
            await send_json(send, 200, view | {"queued_faults": state.faults.queued})
        elif route == ("POST", "/_stub/faults"):
            kinds = data.get("next") if isinstance(data, dict) else None
            if not isinstance(kinds, list):
                raise ValueError('expected a body like {"next": ["429", "500"]}')
            state.faults.queue([str(k) for k in kinds])
            await send_json(send, 200, {"queued_faults": state.faults.queued})
        elif route == ("POST", "/_stub/reset"):
            state.reset()
            await send_json(send, 200, {"reset": True})
        elif route == ("GET", "/_stub/options"):
            await send_json(send, 200, options_view(state.options))
        elif route == ("POST", "/_stub/options"):
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object of option names and values")
            await send_json(send, 200, options_view(state.configure(data)))
        else:
            body = bad_request(f"Unknown request URL: {method} {path}.", code="unknown_url")
            await send_json(send, 404, body)
    except (ValueError, RulesError) as exc:
        await send_json(send, 400, bad_request(str(exc)))
