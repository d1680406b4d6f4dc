"""``GET /flags`` and ``PUT /flags/{component}``: the flag file over the agent's HTTP API.

Mounted on both API servers (legacy and async) as extra JSON routes; the
servers know nothing of flags. Writes go through the same validated, atomic,
audited path as the CLI, with source ``api``, or ``ui`` when the body says
``"source": "ui"`` (the dashboard's controls).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from codeagent.protocols import ExtraRoute
from codeagent_app.flags_cli import flags_document
from feature_flags import COMPONENTS, ComponentChange, FlagFileError, Mode, update_flags
from feature_flags.writer import FlagFileInvalid

#: The audit sources a ``PUT /flags/{component}`` may name (default ``api``).
SOURCES = ("api", "ui")
#: The reason recorded when the body gives none, per source.
_DEFAULT_REASON = {"api": "set through the API", "ui": "set from the dashboard"}


def _error(status: int, code: str, message: str) -> tuple[int, Any]:
    return status, {"error": {"code": code, "message": message}}


def flags_routes(flags_path: Path) -> list[ExtraRoute]:
    """The two flag routes over one flag file."""

    def get(ident: str | None, body: Any) -> tuple[int, Any]:
        doc = flags_document(flags_path)
        if ident is None:
            return 200, doc
        row = next((r for r in doc["components"] if r["component"] == ident), None)
        return (200, row) if row else _error(404, "not_found", f"no component {ident!r}")

    def put(ident: str | None, body: Any) -> tuple[int, Any]:
        if ident is None:
            return _error(405, "method_not_allowed", "PUT needs a component: /flags/{component}")
        if ident not in COMPONENTS:
            return _error(404, "not_found", f"no component {ident!r}; known: {', '.join(COMPONENTS)}")
        if not isinstance(body, dict):
            return _error(400, "invalid_request", 'body must be a JSON object like {"mode": "new"}')
        unknown = sorted(set(body) - {"mode", "percent", "serve", "reason", "source"})
        if unknown:
            return _error(400, "invalid_request", f"unknown field(s): {', '.join(unknown)}")
        try:
            mode = Mode(str(body.get("mode")))
        except ValueError:
            return _error(400, "invalid_request", f"mode: must be one of {', '.join(m.value for m in Mode)}")
        percent = body.get("percent")
        if mode is Mode.CANARY and not isinstance(percent, int | float):
            return _error(400, "invalid_request", "percent: a number 0-100 is required with mode 'canary'")
        source = body.get("source", "api")
        if source not in SOURCES:
            return _error(400, "invalid_request", f"source: must be one of {', '.join(SOURCES)}")
        serve = body.get("serve")
        if serve is not None and serve not in ("legacy", "new"):
            return _error(400, "invalid_request", "serve: must be 'legacy' or 'new'")
        change = ComponentChange(
            mode=mode,
            percent=float(percent) if mode is Mode.CANARY and percent is not None else None,
            serve=serve if mode is Mode.SHADOW else None,
        )
        try:
            update_flags(
                flags_path,
                components={ident: change},
                source=source,
                reason=str(body.get("reason") or _DEFAULT_REASON[source]),
            )
        except FlagFileInvalid as exc:  # the file as it stands: a conflict with whoever is editing it
            return _error(409, "conflict", f"the flag file must be fixed first: {exc}")
        except FlagFileError as exc:  # the change itself would make the file invalid
            return _error(400, "invalid_request", str(exc))
        return get(ident, None)

    return [ExtraRoute("GET", "/flags", get), ExtraRoute("PUT", "/flags", put)]
