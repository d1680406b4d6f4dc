"""The kernel's shared services and how the IoC container builds them.

Registered with :func:`register_services`, created lazily by
:meth:`Services.resolve_base` (metrics, event bus, orchestrator, LLM
connection pool) and on demand (the embedded stub LLM only when a workspace
has no endpoint; the API server only when a port is given). The container
closes them in reverse order of creation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from codeagent.protocols import ExtraRoute
from core_async._compat import ato_thread
from core_async.kernel.api_app import create_api_app
from core_async.kernel.container import AsyncIoCContainer, Token
from core_async.kernel.events import Event, EventBus
from core_async.kernel.http_server import ApiServer
from core_async.kernel.metrics import MetricsCollector
from core_async.kernel.orchestrator import TaskOrchestrator
from core_async.llm_transport import AsyncEndpointPool

if TYPE_CHECKING:
    from codeagent.stub import StubServer
    from core_async.kernel.server_core import KernelOptions
    from core_async.kernel.workspace import WorkspaceRuntime

log = logging.getLogger("codeagent.kernel.services")

METRICS: Token[MetricsCollector] = Token("metrics")
EVENTS: Token[EventBus] = Token("events")
ORCHESTRATOR: Token[TaskOrchestrator] = Token("orchestrator")
LLM_POOL: Token[AsyncEndpointPool] = Token("llm-pool")
STUB_LLM: Token[StubServer] = Token("stub-llm")
API: Token[ApiServer] = Token("api")


def register_services(container: AsyncIoCContainer, options: KernelOptions) -> None:
    """Register the factories of every shared service (nothing is created yet)."""

    async def metrics(_: AsyncIoCContainer) -> MetricsCollector:
        return MetricsCollector()

    async def events(c: AsyncIoCContainer) -> EventBus:
        collector = await c.resolve(METRICS)

        def count(_event: Event) -> None:
            collector.events.inc()

        return EventBus(capacity=options.event_capacity, on_publish=count)

    async def orchestrator(c: AsyncIoCContainer) -> TaskOrchestrator:
        return TaskOrchestrator(options.limits, metrics=await c.resolve(METRICS))

    async def pool(_: AsyncIoCContainer) -> AsyncEndpointPool:
        return AsyncEndpointPool()

    async def close_bus(bus: EventBus) -> None:
        bus.close()

    container.register(METRICS, metrics, close=_nothing_to_close)
    container.register(EVENTS, events, close=close_bus)
    container.register(ORCHESTRATOR, orchestrator, close=_nothing_to_close)
    container.register(LLM_POOL, pool)
    container.register(STUB_LLM, _start_stub, close=_stop_stub)


def _nothing_to_close(_: object) -> None:
    """Services that hold no OS resource (metrics, the orchestrator, whose jobs end with the main loop)."""


async def _start_stub(_: AsyncIoCContainer) -> StubServer:
    from codeagent.stub import StubServer

    stub = await ato_thread(StubServer().start)
    log.warning("no LLM configured; using the embedded stub LLM at %s", stub.url)
    return stub


async def _stop_stub(stub: StubServer) -> None:
    await ato_thread(stub.stop)


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

    async def stub_url(self, container: AsyncIoCContainer) -> str:
        """The embedded stub LLM's base URL, starting it on first use."""
        stub = await container.resolve(STUB_LLM)
        return stub.url

    async def start_api(
        self,
        container: AsyncIoCContainer,
        runtimes: Sequence[WorkspaceRuntime],
        token: Callable[[], str | None],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        extra_routes: Sequence[ExtraRoute] = (),
    ) -> ApiServer:
        """Build and start the API server over ``runtimes`` (the first is the default workspace)."""

        async def api(_: AsyncIoCContainer) -> ApiServer:
            app = create_api_app(
                list(runtimes),
                metrics=self.metrics,
                events=self.events,
                token=token,
                extra_routes=extra_routes,
            )
            server = ApiServer(app, host, port)
            await server.start()
            return server

        container.register(API, api)
        self.api = await container.resolve(API)
        return self.api
