"""The kernel's shared services and how the IoC container builds them.

Registered with :func:`register_services`, created lazily by
:meth:`Services.resolve_base` (metrics, event bus, orchestrator, LLM
connection pool) and on demand (the fallback LLM endpoint only when a
workspace has none: the application injects how to get one, e.g. by starting
its embedded stub; the API server only when a port is given). The container
closes them in reverse order of creation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from codeagent.config import CONFIG_RELPATH
from codeagent.errors import ConfigError
from codeagent.mounts import Mount
from codeagent.protocols import ExtraRoute
from core_async.kernel.api_app import create_api_app
from core_async.kernel.container import AsyncIoCContainer, Token
from core_async.kernel.events import Event, EventBus
from core_async.kernel.http_server import ApiServer
from core_async.kernel.metrics import MetricsCollector
from core_async.kernel.orchestrator import TaskOrchestrator
from core_async.llm_transport import AsyncEndpointPool

if TYPE_CHECKING:
    from core_async.kernel.server_core import KernelOptions
    from core_async.kernel.workspace import WorkspaceRuntime

log = logging.getLogger("codeagent.kernel.services")

METRICS: Token[MetricsCollector] = Token("metrics")
EVENTS: Token[EventBus] = Token("events")
ORCHESTRATOR: Token[TaskOrchestrator] = Token("orchestrator")
LLM_POOL: Token[AsyncEndpointPool] = Token("llm-pool")
FALLBACK_LLM: Token[str] = Token("fallback-llm")

#: How the application provides an LLM endpoint for workspaces that configure none:
#: an async context manager yielding its base URL (entered on first need, exited at close).
EndpointProvider = Callable[[], AbstractAsyncContextManager[str]]
API: Token[ApiServer] = Token("api")


def register_services(container: AsyncIoCContainer, options: KernelOptions) -> None:
    """Register the factories of every shared service (nothing is created yet)."""

    async def metrics(_: AsyncIoCContainer) -> MetricsCollector:
        return MetricsCollector()

    async def events(c: AsyncIoCContainer) -> EventBus:
        collector = await c.resolve(METRICS)

        sink = options.on_event

        def count(event: Event) -> None:
            collector.events.inc()
            if sink is not None:
                sink(event)

        return EventBus(capacity=options.event_capacity, on_publish=count)

    async def orchestrator(c: AsyncIoCContainer) -> TaskOrchestrator:
        return TaskOrchestrator(options.limits, metrics=await c.resolve(METRICS))

    async def pool(_: AsyncIoCContainer) -> AsyncEndpointPool:
        return AsyncEndpointPool(wrap_transport=options.wrap_llm_transport)

    async def close_bus(bus: EventBus) -> None:
        bus.close()

    container.register(METRICS, metrics, close=_nothing_to_close)
    container.register(EVENTS, events, close=close_bus)
    container.register(ORCHESTRATOR, orchestrator, close=_nothing_to_close)
    container.register(LLM_POOL, pool)
    _register_fallback_llm(container, options.fallback_llm)


def _register_fallback_llm(container: AsyncIoCContainer, provider: EndpointProvider | None) -> None:
    """The fallback endpoint: entered when first resolved, exited when the container closes."""
    entered: list[AbstractAsyncContextManager[str]] = []

    async def endpoint(_: AsyncIoCContainer) -> str:
        if provider is None:
            raise ConfigError(
                CONFIG_RELPATH, "no LLM endpoint: set llm.base_url or pass an LLM URL", field="llm.base_url"
            )
        manager = provider()
        url = await manager.__aenter__()
        entered.append(manager)
        return url

    async def leave(_url: str) -> None:
        while entered:
            await entered.pop().__aexit__(None, None, None)

    container.register(FALLBACK_LLM, endpoint, close=leave)


def _nothing_to_close(_: object) -> None:
    """Services that hold no OS resource (metrics, the orchestrator, whose jobs end with the main loop)."""


@dataclass
class Services:
    """The shared services of one kernel."""

    container: AsyncIoCContainer
    metrics: MetricsCollector
    events: EventBus
    orchestrator: TaskOrchestrator
    pool: AsyncEndpointPool
    api: ApiServer | None = None

    @classmethod
    async def resolve_base(cls, container: AsyncIoCContainer) -> Services:
        """Create the services every kernel needs, in dependency order."""
        return cls(
            container=container,
            metrics=await container.resolve(METRICS),
            events=await container.resolve(EVENTS),
            orchestrator=await container.resolve(ORCHESTRATOR),
            pool=await container.resolve(LLM_POOL),
        )

    def limits_view(self) -> dict[str, Any]:
        """``GET /v1/limits``: the limits in force, and what is in use and waiting now."""
        usage = self.orchestrator.manage_resources()
        return {
            "limits": usage.limits.as_dict(),
            "in_use": {
                "todos": usage.running,
                "queued": usage.queued,
                "llm_slots": usage.llm_in_use,
                "llm_waiting": usage.llm_waiting,
                "file_slots": usage.files_in_use,
                "git_writers": usage.git_writers_busy,
            },
        }

    async def fallback_llm_url(self, container: AsyncIoCContainer) -> str:
        """The fallback endpoint's base URL, obtained on first use (raises :class:`ConfigError` without one)."""
        return await container.resolve(FALLBACK_LLM)

    async def start_api(
        self,
        container: AsyncIoCContainer,
        runtimes: Sequence[WorkspaceRuntime],
        token: Callable[[], str | None],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        extra_routes: Sequence[ExtraRoute] = (),
        mounts: Sequence[Mount] = (),
    ) -> ApiServer:
        """Build and start the API server over ``runtimes`` (the first is the default workspace)."""

        async def api(_: AsyncIoCContainer) -> ApiServer:
            app = create_api_app(
                list(runtimes),
                metrics=self.metrics,
                events=self.events,
                token=token,
                extra_routes=extra_routes,
                limits=self.limits_view,
                mounts=mounts,
            )
            server = ApiServer(app, host, port)
            await server.start()
            return server

        container.register(API, api)
        self.api = await container.resolve(API)
        return self.api
