"""One pooled HTTP client per endpoint: HTTP/2 by default, a clean fallback to HTTP/1.1.

Known figures on this stack (httpx 0.28 / httpcore 1.0, a 50 ms server):
HTTP/1.1 with httpx's default pool fails 1,000 of 1,000 requests at 1,000
concurrent with ``PoolTimeout``, while one HTTP/2 connection carries 1,000
concurrent requests at ~1,000 req/s. So:

* every endpoint (scheme, host, port) gets ONE ``httpx.AsyncClient`` shared by
  every caller of that endpoint (:class:`AsyncEndpointPool` owns them);
* the queue is the endpoint's *slots* (a semaphore callers hold for the
  duration of one request), never the connection pool: the pool timeout is
  disabled, and over HTTP/1.1 the slots equal the pool's connection limit, so
  no request ever waits inside the pool; over HTTP/2 httpcore additionally
  honours the server's ``max_concurrent_streams`` per connection;
* ``https://`` negotiates HTTP/2 by ALPN. For cleartext ``http://`` httpx
  speaks h2 only with prior knowledge (``http1=False``), which an HTTP/1.1-only
  server rejects, so ``auto`` mode probes the origin once (``GET /``): any HTTP
  answer over h2 keeps HTTP/2; a protocol-level failure switches the endpoint
  to an HTTP/1.1 client. A connect failure decides nothing (it propagates, the
  caller retries, and the next call probes again).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Any, Self

import httpx

from core_async._compat import LOOP_KIND, ALock, ASemaphore, ato_thread


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


@dataclass(eq=False)
class Endpoint:
    """A pooled client for one origin, its slots and what it has done so far."""

    origin: str
    http_version: str
    client: httpx.AsyncClient
    slots: ASemaphore
    connections_opened: int = 0
    events: dict[str, int] = field(default_factory=dict)

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
        self._endpoints: dict[str, Endpoint] = {}
        self._lock = ALock()
        self._closed = False

    def _client(self, scheme: str, *, http2: bool) -> httpx.AsyncClient:
        limits = self.limits
        connections = limits.http2_connections if http2 else limits.http1_connections
        transport = httpx.AsyncHTTPTransport(
            http1=not http2 or scheme == "https",
            http2=http2,
            limits=httpx.Limits(
                max_connections=connections,
                max_keepalive_connections=connections,
                keepalive_expiry=limits.keepalive_expiry,
            ),
        )
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
                extensions={"trace": endpoint.trace},
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
        scheme, origin = origin_of(base_url)
        found = self._endpoints.get(origin)
        if found is not None:
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
            return endpoint

    def endpoints(self) -> list[Endpoint]:
        """Every endpoint opened so far."""
        return list(self._endpoints.values())

    async def aclose(self) -> None:
        """Close every pooled client (and with it every connection)."""
        async with self._lock:
            self._closed = True
            endpoints, self._endpoints = list(self._endpoints.values()), {}
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
