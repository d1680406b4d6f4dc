"""The async kernel: the main loop, orchestration, config hot reload, metrics, IoC, the API.

Public API::

    run_async(workspaces, *, llm_url, until_idle, use_uvloop=True) -> int
    serve_async(workspaces, *, host, port, llm_url, token=None, grace_seconds=10.0) -> None
    AsyncServerCore, KernelOptions, TaskOrchestrator, ResourceLimits, ConfigurationManager,
    MetricsCollector, AsyncIoCContainer, EventBus, create_api_app, ApiServer

Imports are lazy so that ``import core_async.kernel`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core_async.kernel.api_app import create_api_app
    from core_async.kernel.config_manager import ConfigurationManager
    from core_async.kernel.container import AsyncIoCContainer, Token
    from core_async.kernel.entry import run_async, run_kernel, serve_async
    from core_async.kernel.events import EventBus
    from core_async.kernel.http_server import ApiServer
    from core_async.kernel.limits import ResourceLimits
    from core_async.kernel.metrics import MetricsCollector
    from core_async.kernel.orchestrator import TaskOrchestrator
    from core_async.kernel.server_core import AsyncServerCore, KernelOptions

_WHERE = {
    "create_api_app": "api_app",
    "ConfigurationManager": "config_manager",
    "AsyncIoCContainer": "container",
    "Token": "container",
    "run_async": "entry",
    "run_kernel": "entry",
    "serve_async": "entry",
    "EventBus": "events",
    "ApiServer": "http_server",
    "ResourceLimits": "limits",
    "MetricsCollector": "metrics",
    "TaskOrchestrator": "orchestrator",
    "AsyncServerCore": "server_core",
    "KernelOptions": "server_core",
}

__all__ = [
    "ApiServer",
    "AsyncIoCContainer",
    "AsyncServerCore",
    "ConfigurationManager",
    "EventBus",
    "KernelOptions",
    "MetricsCollector",
    "ResourceLimits",
    "TaskOrchestrator",
    "Token",
    "create_api_app",
    "run_async",
    "run_kernel",
    "serve_async",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'core_async.kernel' has no attribute {name!r}")
    return getattr(importlib.import_module(f"core_async.kernel.{module}"), name)
