"""The migration dashboard: ``codeagent serve`` (either loop) answers a web page at ``/ui``.

Which component runs where and how each path is doing, what the shadow runs
disagree on, the todos as they move, the live event stream, the flags audit
log and the staged rollout's next step, the newest A/B report; and controls to
change a component's mode or roll it back, through the flags API (audited with
source ``ui``). Server-rendered (Jinja2) and readable without JavaScript; a
little plain JavaScript keeps it live. The servers know nothing of it: the
application passes it to them as a mount (:mod:`codeagent.mounts`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from codeagent.mounts import Mount
from codeagent_app.dashboard.app import PREFIX, Dashboard, DashboardConfig
from codeagent_app.dashboard.data import Workspace

if TYPE_CHECKING:
    from codeagent_app.runner import LoopRequest

__all__ = ["BENCH_DIR_ENV", "PREFIX", "Dashboard", "DashboardConfig", "bench_dir", "dashboard_mounts"]

#: Where the A/B view looks for ``codeagent bench`` reports (default: ``./bench-results``).
BENCH_DIR_ENV = "CODEAGENT_BENCH_DIR"


def bench_dir() -> Path:
    """The configured directory of bench reports: ``$CODEAGENT_BENCH_DIR``, else ``./bench-results``."""
    configured = os.environ.get(BENCH_DIR_ENV)
    return Path(configured).expanduser().resolve() if configured else Path.cwd() / "bench-results"


def dashboard_mounts(request: LoopRequest, roots: Sequence[Path], loop: str) -> list[Mount]:
    """The dashboard as a mount of the API server driving ``roots`` (``loop``: ``legacy`` or ``async``)."""
    from codeagent_app.runner import flags_path
    from codeagent_app.workers import _labelled

    workspaces = [Workspace(label, root, flags_path(root, request.flags)) for root, label in _labelled(roots)]
    config = DashboardConfig(
        loop=loop,
        workspaces=workspaces,
        flags_path=flags_path(roots[0], request.flags),
        bench_dir=bench_dir(),
    )
    return [(PREFIX, Dashboard(config).asgi())]
