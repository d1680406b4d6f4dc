"""One pooled HTTP client per endpoint: HTTP/2 by default, a clean fallback to HTTP/1.1.

Known figures on this stack (httpx 0.28 / httpcore 1.0, a 50 ms server):
HTTP/1.1 with httpx's default pool fails 1,000 of 1,000 requests at 1,000
concurrent with ``PoolTimeout``, while one HTTP/2 connection carries 1,000
concurrent requests at ~1,000 req/s. So:

* every endpoint (scheme, host, port) gets ONE ``httpx.AsyncClient`` shared by
  every caller of that endpoint (:class:`AsyncEndpointPool` owns them);
* the queue is the endpoint's *slots* (a semaphore callers hold for the
  duration of one request), never the connection pool: the pool timeout is
  disabled, and over HTTP/1.1 the slots equal the number of *lanes*
  (:class:`AsyncLaneTransport`: one single-connection pool each, a request
  per lane), so no request ever waits, or fights for a connection, inside
  httpcore; over HTTP/2 httpcore additionally honours the server's
  ``max_concurrent_streams`` per connection;
* over HTTP/2 the streams of a connection share its reads
  (``core_async/_httpcore_fixes.py``): an answer that has arrived is not held
  back behind streams still waiting for theirs;
* ``https://`` negotiates HTTP/2 by ALPN. For cleartext ``http://`` httpx
  speaks h2 only with prior knowledge (``http1=False``), which an HTTP/1.1-only
  server rejects, so ``auto`` mode probes the origin once (``GET /``): any HTTP
  answer over h2 keeps HTTP/2; a protocol-level failure switches the endpoint
  to an HTTP/1.1 client. A connect failure decides nothing (it propagates, the
  caller retries, and the next call probes again).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Any, Self

import httpx

from core_async._compat import (
    H2_SHARED_READ,
    LOOP_KIND,
    ALock,
    ASemaphore,
    ato_thread,
    install_transport_fixes,
)


class HTTPVersion(StrEnum):
    """Which HTTP version an endpoint pool speaks."""

    AUTO = "auto"
    HTTP2 = "http2"
    HTTP1 = "http1"


#: HTTP/2 pays off when many requests are in flight at once (the async client multiplexes
#: them on one connection). A sync caller has one request in flight per thread, where h2
#: framing only costs (about 2x per request against the stub here), so the generated twin,
#: reading ``LOOP_KIND`` from its own compat module, defaults to HTTP/1.1 keep-alive.
DEFAULT_HTTP_VERSION = HTTPVersion.AUTO if LOOP_KIND == "async" else HTTPVersion.HTTP1

#: Failures that mean "this server does not speak h2 with prior knowledge".
PROTOCOL_MISMATCH = (httpx.RemoteProtocolError, httpx.LocalProtocolError, httpx.ReadError, httpx.WriteError)


@dataclass(frozen=True, slots=True)
class PoolLimits:
    """Concurrency and connection limits of one endpoint."""

    http2_streams: int = 256
    http2_connections: int = 4
    http1_connections: int = 64
    keepalive_expiry: float = 30.0
    connect_timeout: float = 10.0


class _LaneStream(httpx.AsyncByteStream):
    """A response body that gives its lane back when it is closed (once)."""

    def __init__(self, stream: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
        self._stream = stream
        self._release: Callable[[], None] | None = release

    def __aiter__(self) -> AsyncIterator[bytes]:
        """The inner body, chunk by chunk."""
        return self._stream.__aiter__()

    async def aclose(self) -> None:
        """Close the inner body, then free the lane."""
        try:
            await self._stream.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


class AsyncLaneTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over ``lanes`` single-connection pools: a request takes a free lane, its response gives it back.

    Why not one httpcore pool of ``lanes`` connections: httpcore hands a
    queued request the *first* idle connection and marks it busy only once
    the request's task runs again, so every request that arrives meanwhile is
    handed the same connection, all but one fail over with
    ``ConnectionNotAvailable`` and go round again, each round scanning every
    connection (a ``poll`` per idle one). At 64 in flight that cost 8 extra
    rounds per request and 12-30 s of CPU for 640 requests. Here each pool
    holds at most one request and one connection; free lanes are reused last
    in, first out, so a light load keeps few connections open. Lanes are made
    on demand by ``make_lane`` (cheap: the TLS context is shared).
    """

    def __init__(self, make_lane: Callable[[], httpx.AsyncBaseTransport], lanes: int) -> None:
        self._make_lane = make_lane
        self._lanes: list[httpx.AsyncBaseTransport] = []
        self._free: list[httpx.AsyncBaseTransport] = []
        self._slots = ASemaphore(lanes)

    def _take(self) -> httpx.AsyncBaseTransport:
        try:
            return self._free.pop()
        except IndexError:
            lane = self._make_lane()
            self._lanes.append(lane)
            return lane

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` on a free lane; the lane stays taken until the response is closed."""
        await self._slots.acquire()
        lane: httpx.AsyncBaseTransport | None = None
        try:
            lane = self._take()
            response = await lane.handle_async_request(request)
        except BaseException:
            if lane is not None:
                self._free.append(lane)
            self._slots.release()
            raise
        taken = lane

        def release() -> None:
            self._free.append(taken)
            self._slots.release()

        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_LaneStream(response.stream, release),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        """Close every lane (and its connection)."""
        lanes, self._lanes, self._free = self._lanes, [], []
        for lane in lanes:
            await lane.aclose()


@dataclass(eq=False)
class Endpoint:
    """A pooled client for one origin, its slots and what it has done so far."""

    origin: str
    http_version: str
    client: httpx.AsyncClient
    slots: ASemaphore
    connections_opened: int = 0
    events: dict[str, int] = field(default_factory=dict)

    @property
    def extensions(self) -> dict[str, Any]:
        """The request extensions of every request on this endpoint: the trace hook, the h2 shared read."""
        return {"trace": self.trace, H2_SHARED_READ: True}

    async def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's trace hook: counts TCP connections (one per ``connect_tcp``)."""
        del info
        if event == "connection.connect_tcp.complete":
            self.connections_opened += 1


def origin_of(base_url: str) -> tuple[str, str]:
    """``("http", "http://host:port")`` for a base URL such as ``http://host:port/v1``."""
    url = httpx.URL(base_url)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"not an http(s) URL: {base_url!r}")
    port = url.port or (443 if url.scheme == "https" else 80)
    host = f"[{url.host}]" if ":" in url.host else url.host
    return url.scheme, f"{url.scheme}://{host}:{port}"


class AsyncEndpointPool:
    """One pooled ``httpx.AsyncClient`` per endpoint, created on first use and shared by all callers.

    Use as an async context manager (or call :meth:`aclose`) so every
    connection is closed. Whoever builds the components (the IoC container)
    owns the pool and hands it to each LLM client.
    """

    def __init__(
        self,
        http_version: HTTPVersion | str = HTTPVersion.AUTO,
        limits: PoolLimits | None = None,
        *,
        wrap_transport: Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport] | None = None,
    ) -> None:
        self.http_version = HTTPVersion(http_version)
        self.limits = limits or PoolLimits()
        # The bridge wraps the transport to record exchanges (or replaces it to replay them).
        self.wrap_transport = wrap_transport
        # Streams of one HTTP/2 connection read for each other (see core_async/_httpcore_fixes.py).
        install_transport_fixes()
        self._endpoints: dict[str, Endpoint] = {}
        self._by_url: dict[str, Endpoint] = {}  # base URL -> endpoint: no URL parsing per request
        self._lock = ALock()
        self._closed = False

    def _client(self, scheme: str, *, http2: bool) -> httpx.AsyncClient:
        limits = self.limits
        transport: httpx.AsyncBaseTransport
        if http2:
            connections = limits.http2_connections
            transport = httpx.AsyncHTTPTransport(
                http1=scheme == "https",
                http2=True,
                limits=httpx.Limits(
                    max_connections=connections,
                    max_keepalive_connections=connections,
                    keepalive_expiry=limits.keepalive_expiry,
                ),
            )
        else:
            tls = httpx.create_ssl_context()  # the slow part, once for every lane
            lane_limits = httpx.Limits(
                max_connections=1, max_keepalive_connections=1, keepalive_expiry=limits.keepalive_expiry
            )

            def make_lane() -> httpx.AsyncBaseTransport:
                return httpx.AsyncHTTPTransport(verify=tls, http1=True, http2=False, limits=lane_limits)

            transport = AsyncLaneTransport(make_lane, limits.http1_connections)
        wrapped = self.wrap_transport(transport) if self.wrap_transport is not None else transport
        return httpx.AsyncClient(
            transport=wrapped, timeout=httpx.Timeout(None, connect=limits.connect_timeout, pool=None)
        )

    def _new_endpoint(self, scheme: str, origin: str, http2: bool) -> Endpoint:
        """A fresh client for ``origin`` (blocking: httpx loads its TLS context here)."""
        slots = self.limits.http2_streams if http2 else self.limits.http1_connections
        version = "HTTP/2" if http2 else "HTTP/1.1"
        return Endpoint(origin, version, self._client(scheme, http2=http2), ASemaphore(slots))

    async def _probe_h2(self, endpoint: Endpoint) -> bool:
        """True when the origin answers HTTP/2 with prior knowledge; raises on connect failures."""
        try:
            response = await endpoint.client.get(
                f"{endpoint.origin}/",
                timeout=self.limits.connect_timeout,
                extensions=endpoint.extensions,
            )
        except PROTOCOL_MISMATCH:
            return False
        await response.aclose()
        return True

    async def endpoint(self, base_url: str) -> Endpoint:
        """The shared endpoint of ``base_url`` (probing its HTTP version on first use).

        Creating a client is a thread hop: httpx loads its TLS context in the
        constructor, which takes tens of milliseconds. Raises
        ``httpx.TransportError`` when the probe cannot connect; nothing is
        cached then, so a later call probes again.
        """
        found = self._by_url.get(base_url)
        if found is not None:
            return found
        scheme, origin = origin_of(base_url)
        found = self._endpoints.get(origin)
        if found is not None:
            self._by_url[base_url] = found
            return found
        async with self._lock:
            found = self._endpoints.get(origin)
            if found is not None:
                return found
            if self._closed:
                raise RuntimeError("the endpoint pool is closed")
            http2 = self.http_version is not HTTPVersion.HTTP1
            endpoint = await ato_thread(self._new_endpoint, scheme, origin, http2)
            if http2 and scheme == "http" and self.http_version is HTTPVersion.AUTO:
                try:
                    speaks_h2 = await self._probe_h2(endpoint)
                except BaseException:
                    await endpoint.client.aclose()
                    raise
                if not speaks_h2:
                    await endpoint.client.aclose()
                    endpoint = await ato_thread(self._new_endpoint, scheme, origin, False)
            self._endpoints[origin] = endpoint
            self._by_url[base_url] = endpoint
            return endpoint

    def endpoints(self) -> list[Endpoint]:
        """Every endpoint opened so far."""
        return list(self._endpoints.values())

    async def aclose(self) -> None:
        """Close every pooled client (and with it every connection)."""
        async with self._lock:
            self._closed = True
            endpoints, self._endpoints, self._by_url = list(self._endpoints.values()), {}, {}
        for endpoint in endpoints:
            await endpoint.client.aclose()

    async def __aenter__(self) -> Self:
        """Use the pool as an async context manager; every client closes on exit."""
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close every pooled client (see :meth:`aclose`)."""
        await self.aclose()
