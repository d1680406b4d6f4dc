"""One pooled HTTP client per endpoint and transport: HTTP/1.1 on aiohttp by default (async).

Measured per-request client CPU against the stub in another process (uvloop;
``benchmarks/micro/test_llm_transports.py``, ``nox -s bench`` at fb73369; ms of
CPU per request at 1 / 64 / 1,000 in flight): HTTP/1.1 on aiohttp, requests sent
straight to aiohttp 1.06 / 0.32 / 0.69, 0 errors at 1,000 in flight, all 1,000
held by the server; the same session through httpx's client 1.68 / 0.71 / 1.06;
httpcore HTTP/2 with the read fix 2.89 / 1.51 / 1.88, but httpcore puts at most
100 streams on a connection and opens no second one while it is usable, so 900
of 1,000 wait (p50 10 s against a 2 s server); httpcore HTTP/1.1 lanes 2.33 /
1.22 / 1.52; plain httpx HTTP/1.1 2.21 / 11.3 / 31.8 with 493 errors of 1,000 at
1,000 in flight (its pool hands one idle connection to every waiting request,
all but one fail over and go round again). docs/llm-client.md has the table.
So:

* :data:`DEFAULT_TRANSPORT` is ``aiohttp`` for the async client (plain requests
  skip httpx: :meth:`Endpoint.post`; a wrapped transport, where the bridge
  records or replays, sees every request through httpx) and HTTP/1.1 on
  httpcore (:class:`AsyncLaneTransport`) for the generated sync twin, which has
  no aiohttp; each endpoint may choose another (``llm.transport`` in the
  workspace's configuration, :class:`HTTPVersion`);
* every endpoint (scheme, host, port) and transport gets ONE ``httpx.AsyncClient``
  shared by every caller of that endpoint (:class:`AsyncEndpointPool` owns them);
* the queue is the endpoint's *slots* (a semaphore callers hold for the
  duration of one request), never the connection pool: the pool timeout is
  disabled, and over HTTP/1.1 the slots equal the connections, so no request
  ever waits, or fights for a connection, inside the transport; over HTTP/2
  httpcore additionally honours the server's ``max_concurrent_streams``;
* over HTTP/2 the streams of a connection share its reads
  (``core_async/_httpcore_fixes.py``, installed when the first HTTP/2 endpoint
  opens, never for the default): an answer that has arrived is not held back
  behind streams still waiting for theirs. httpcore sends no ``RST_STREAM`` for
  a stream its caller abandons, so a cancelled request (a hedge's loser, a
  deadline) goes on at the server over HTTP/2; over HTTP/1.1 its connection is
  closed and the server sees the client leave;
* ``https://`` negotiates HTTP/2 by ALPN. For cleartext ``http://`` httpx
  speaks h2 only with prior knowledge (``http1=False``), which an HTTP/1.1-only
  server rejects, so ``probe`` mode probes the origin once (``GET /``): any
  HTTP answer over h2 keeps HTTP/2; a protocol-level failure switches the
  endpoint to HTTP/1.1 on httpcore. A connect failure decides nothing (it
  propagates, the caller retries, and the next call probes again).

Each endpoint also carries the tail-latency state every client of it shares
(:class:`EndpointTail`): the window of times to first byte, the hedge budget,
the ``Retry-After`` gate and the counters.
"""

from __future__ import annotations

import http.cookiejar
import logging
from collections.abc import AsyncIterator, Callable, Mapping
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
    aiohttp_sender,
    ato_thread,
    install_transport_fixes,
)
from core_async.llm_wire import AsyncAnswer, AsyncSender, HedgeBudget, QuantileWindow
from core_async.ratelimit import AsyncRetryGate

log = logging.getLogger(__name__)


class HTTPVersion(StrEnum):
    """Which transport (and so which HTTP version) an endpoint speaks."""

    #: This implementation's default, :data:`DEFAULT_TRANSPORT`.
    AUTO = "auto"
    #: HTTP/1.1 on aiohttp (async only: the sync twin uses ``http1`` instead).
    AIOHTTP = "aiohttp"
    #: HTTP/1.1 on httpcore, one single-connection pool per lane (:class:`AsyncLaneTransport`).
    HTTP1 = "http1"
    #: HTTP/2 on httpcore: prior knowledge on ``http://``, ALPN on ``https://``.
    HTTP2 = "http2"
    #: HTTP/2 if the origin speaks it (one probe), else ``http1``.
    PROBE = "probe"


#: What ``auto`` means here. HTTP/1.1 on aiohttp costs the async client the least CPU per
#: request at every load measured and holds 1,000 requests in flight (see the module's
#: docstring). The generated twin, reading ``LOOP_KIND`` from its own compat module, has no
#: aiohttp: one request per thread over HTTP/1.1 keep-alive on httpcore.
DEFAULT_TRANSPORT = HTTPVersion.AIOHTTP if LOOP_KIND == "async" else HTTPVersion.HTTP1

#: The client's default (kept as it was for the sync twin, whose tests read it).
DEFAULT_HTTP_VERSION = HTTPVersion.AUTO if LOOP_KIND == "async" else HTTPVersion.HTTP1

#: Failures that mean "this server does not speak h2 with prior knowledge".
PROTOCOL_MISMATCH = (httpx.RemoteProtocolError, httpx.LocalProtocolError, httpx.ReadError, httpx.WriteError)


@dataclass(frozen=True, slots=True)
class PoolLimits:
    """Concurrency and connection limits of one endpoint."""

    http2_streams: int = 256
    http2_connections: int = 4
    #: Slots (and at most as many connections) of an HTTP/1.1 endpoint, aiohttp or httpcore.
    http1_connections: int = 1024
    keepalive_expiry: float = 30.0
    connect_timeout: float = 10.0


class NoCookies(http.cookiejar.CookieJar):
    """A cookie jar that keeps nothing: an LLM endpoint's answers carry no state for us, and
    httpx otherwise runs every response through the stdlib's cookie machinery (a tenth of the
    client's CPU per request at one in flight)."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        """Keep no cookie."""
        del response, request

    def set_cookie(self, cookie: http.cookiejar.Cookie) -> None:
        """Keep no cookie."""
        del cookie


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
class EndpointTail:
    """What every client of one endpoint learns and spends together (see :class:`~core_async.llm_wire.TailPolicy`).

    Counters: ``requests`` (one per call, however many attempts and hedges it
    took), ``attempts`` (requests sent, hedges not included), ``hedges`` (copies
    sent), ``hedge_wins`` (calls answered by the copy), ``cut_short`` (200s whose
    body could not be decoded), ``idle_timeouts`` (answers that stalled).
    """

    ttfb: QuantileWindow = field(default_factory=QuantileWindow)
    budget: HedgeBudget = field(default_factory=HedgeBudget)
    gate: AsyncRetryGate = field(default_factory=AsyncRetryGate)
    requests: int = 0
    attempts: int = 0
    hedges: int = 0
    hedge_wins: int = 0
    cut_short: int = 0
    idle_timeouts: int = 0

    def view(self) -> dict[str, Any]:
        """The counters and the current time-to-first-byte quantiles (seconds), JSON-ready."""
        return {
            "requests": self.requests,
            "attempts": self.attempts,
            "hedges": self.hedges,
            "hedge_wins": self.hedge_wins,
            "hedge_share": self.hedges / self.requests if self.requests else 0.0,
            "cut_short": self.cut_short,
            "idle_timeouts": self.idle_timeouts,
            "paced": self.gate.paced,
            "ttfb_samples": len(self.ttfb),
            "ttfb_p50_s": self.ttfb.quantile(0.5),
            "ttfb_p95_s": self.ttfb.quantile(0.95),
        }


@dataclass(eq=False)
class Endpoint:
    """A pooled client for one origin and transport, its slots and what it has done so far."""

    origin: str
    http_version: str
    client: httpx.AsyncClient
    slots: ASemaphore
    transport: str = "http1"
    #: How many slots there are, and how many are taken now.
    capacity: int = 1
    in_flight: int = 0
    connections_opened: int = 0
    events: dict[str, int] = field(default_factory=dict)
    tail: EndpointTail = field(default_factory=EndpointTail)
    #: The aiohttp sender under ``client`` (closed with the endpoint), if the transport is aiohttp.
    sender: AsyncSender | None = None
    #: Whether :meth:`post` hands requests to ``sender`` directly (not when the transport is wrapped).
    direct: bool = False
    #: Called as each request is sent, and with each answer once its headers have arrived.
    on_request: list[Callable[[], None]] = field(default_factory=list)
    on_response: list[Callable[[AsyncAnswer], None]] = field(default_factory=list)
    _urls: dict[str, httpx.URL] = field(default_factory=dict, repr=False)  # parsed once, not per request

    def connected(self) -> None:
        """A new connection was opened (transports without httpcore's trace hook call this)."""
        self.connections_opened += 1

    @property
    def extensions(self) -> dict[str, Any]:
        """The request extensions of every request on this endpoint: the trace hook, the h2 shared read."""
        return {"trace": self.trace, H2_SHARED_READ: True}

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], io_timeout: float) -> AsyncAnswer:
        """POST ``body`` to ``url``; the answer once its headers have arrived (the caller closes it).

        Every connect and read within ``io_timeout`` seconds; httpx's transport
        errors on failure, whatever carried the request. Over aiohttp the
        request skips httpx's client (half the client's CPU per request).
        """
        for hook in self.on_request:
            hook()
        answer: AsyncAnswer
        if self.direct and self.sender is not None:
            answer = await self.sender.post(url, body, headers, io_timeout)
        else:
            parsed = self._urls.get(url)
            if parsed is None:
                parsed = self._urls[url] = httpx.URL(url)
            request = self.client.build_request(
                "POST",
                parsed,
                content=body,
                headers=headers,
                timeout=httpx.Timeout(io_timeout, pool=None),
                extensions=self.extensions,
            )
            answer = await self.client.send(request, stream=True)
        for observe in self.on_response:
            observe(answer)
        return answer

    async def aclose(self) -> None:
        """Close the pooled client and the sender under it (every connection)."""
        try:
            await self.client.aclose()
        finally:
            if self.sender is not None:
                await self.sender.aclose()

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
    """One pooled ``httpx.AsyncClient`` per endpoint and transport, created on first use and shared by all callers.

    ``http_version`` is the transport of endpoints whose caller names none
    (``auto``: :data:`DEFAULT_TRANSPORT`). Use as an async context manager (or
    call :meth:`aclose`) so every connection is closed. Whoever builds the
    components (the IoC container) owns the pool and hands it to each LLM client.
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
        self._endpoints: dict[tuple[str, HTTPVersion], Endpoint] = {}
        # (base URL, asked transport) -> endpoint: no URL parsing per request
        self._by_url: dict[tuple[str, HTTPVersion | None], Endpoint] = {}
        self._lock = ALock()
        self._closed = False

    def resolve(self, http_version: HTTPVersion | str | None = None) -> HTTPVersion:
        """The transport an endpoint asked to speak ``http_version`` gets (``None``: the pool's own)."""
        version = self.http_version if http_version is None else HTTPVersion(http_version)
        return DEFAULT_TRANSPORT if version is HTTPVersion.AUTO else version

    def _client(
        self, scheme: str, kind: HTTPVersion, on_connect: Callable[[], None]
    ) -> tuple[httpx.AsyncClient, HTTPVersion, AsyncSender | None]:
        limits = self.limits
        transport: httpx.AsyncBaseTransport | None = None
        sender = None
        if kind is HTTPVersion.AIOHTTP:
            sender = aiohttp_sender(
                connections=limits.http1_connections,
                keepalive_expiry=limits.keepalive_expiry,
                on_connect=on_connect,
            )
            if sender is not None:
                transport = sender.transport()
            else:
                if LOOP_KIND == "async":
                    log.warning("aiohttp is not installed: HTTP/1.1 on httpcore instead")
                kind = HTTPVersion.HTTP1
        if kind is HTTPVersion.HTTP2:
            # Streams of one HTTP/2 connection read for each other (see core_async/_httpcore_fixes.py).
            install_transport_fixes()
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
        elif kind is HTTPVersion.HTTP1:
            tls = httpx.create_ssl_context()  # the slow part, once for every lane
            lane_limits = httpx.Limits(
                max_connections=1, max_keepalive_connections=1, keepalive_expiry=limits.keepalive_expiry
            )

            def make_lane() -> httpx.AsyncBaseTransport:
                return httpx.AsyncHTTPTransport(verify=tls, http1=True, http2=False, limits=lane_limits)

            transport = AsyncLaneTransport(make_lane, limits.http1_connections)
        assert transport is not None
        wrapped = self.wrap_transport(transport) if self.wrap_transport is not None else transport
        client = httpx.AsyncClient(
            transport=wrapped,
            timeout=httpx.Timeout(None, connect=limits.connect_timeout, pool=None),
            cookies=NoCookies(),
        )
        return client, kind, sender

    def _new_endpoint(self, scheme: str, origin: str, kind: HTTPVersion) -> Endpoint:
        """A fresh client for ``origin`` speaking ``kind`` (blocking: TLS contexts are loaded here)."""
        counter: list[Endpoint] = []
        client, kind, sender = self._client(scheme, kind, lambda: counter[0].connected())
        http2 = kind is HTTPVersion.HTTP2
        slots = self.limits.http2_streams if http2 else self.limits.http1_connections
        version = "HTTP/2" if http2 else "HTTP/1.1"
        endpoint = Endpoint(
            origin,
            version,
            client,
            ASemaphore(slots),
            transport=kind.value,
            capacity=slots,
            sender=sender,
            # A wrapped transport (the bridge records or replays there) must see every request.
            direct=sender is not None and self.wrap_transport is None,
        )
        counter.append(endpoint)
        return endpoint

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

    async def endpoint(self, base_url: str, http_version: HTTPVersion | str | None = None) -> Endpoint:
        """The shared endpoint of ``base_url`` speaking ``http_version`` (``None``: the pool's default).

        Creating a client is a thread hop: httpx loads its TLS context in the
        constructor, which takes tens of milliseconds. In ``probe`` mode the
        first call probes the origin's HTTP version; it raises
        ``httpx.TransportError`` when the probe cannot connect, and nothing is
        cached then, so a later call probes again.
        """
        asked = None if http_version is None else HTTPVersion(http_version)
        found = self._by_url.get((base_url, asked))
        if found is not None:
            return found
        scheme, origin = origin_of(base_url)
        kind = self.resolve(asked)
        found = self._endpoints.get((origin, kind))
        if found is not None:
            self._by_url[(base_url, asked)] = found
            return found
        async with self._lock:
            found = self._endpoints.get((origin, kind))
            if found is not None:
                return found
            if self._closed:
                raise RuntimeError("the endpoint pool is closed")
            first = HTTPVersion.HTTP2 if kind is HTTPVersion.PROBE else kind
            endpoint = await ato_thread(self._new_endpoint, scheme, origin, first)
            if kind is HTTPVersion.PROBE and scheme == "http":
                try:
                    speaks_h2 = await self._probe_h2(endpoint)
                except BaseException:
                    await endpoint.aclose()
                    raise
                if not speaks_h2:
                    await endpoint.aclose()
                    endpoint = await ato_thread(self._new_endpoint, scheme, origin, HTTPVersion.HTTP1)
            self._endpoints[(origin, kind)] = endpoint
            self._by_url[(base_url, asked)] = endpoint
            return endpoint

    def endpoints(self) -> list[Endpoint]:
        """Every endpoint opened so far."""
        return list(self._endpoints.values())

    async def aclose(self) -> None:
        """Close every pooled client (and with it every connection); log what each endpoint did."""
        async with self._lock:
            self._closed = True
            endpoints, self._endpoints, self._by_url = list(self._endpoints.values()), {}, {}
        for endpoint in endpoints:
            tail = endpoint.tail
            if tail.requests:
                log.info(
                    "LLM endpoint %s (%s): %d requests, %d attempts, %d hedges (%.1f%%, %d won),"
                    " %d held by a burst of 429s, %d cut short, %d stalled",
                    endpoint.origin,
                    endpoint.transport,
                    tail.requests,
                    tail.attempts,
                    tail.hedges,
                    100.0 * tail.hedges / tail.requests,
                    tail.hedge_wins,
                    tail.gate.paced,
                    tail.cut_short,
                    tail.idle_timeouts,
                )
            await endpoint.aclose()

    async def __aenter__(self) -> Self:
        """Use the pool as an async context manager; every client closes on exit."""
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close every pooled client (see :meth:`aclose`)."""
        await self.aclose()
