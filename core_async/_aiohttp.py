"""HTTP/1.1 on aiohttp for the async LLM client: a direct sender, and an httpx transport on the same session.

Why a direct path beside the httpx transport: per request at one in flight,
httpx's client and models cost about as much CPU as aiohttp's whole exchange
(client CPU against the stub in another process: plain aiohttp 0.45 ms,
httpx on httpx-aiohttp 1.0 ms, httpx on httpcore HTTP/1.1 1.5 ms, the legacy
client on httpx's sync client 1.0 ms; the transport table of
``docs/llm-client.md``, from ``benchmarks/micro/test_llm_transports.py``). The LLM client's plain
requests go straight to aiohttp (:class:`AiohttpSender`); whoever needs
httpx's transport interface (the bridge records and replays exchanges there)
gets :meth:`AiohttpSender.transport`, httpx-aiohttp's ``AiohttpTransport`` on
the same session and so the same connections and limits.

aiohttp's failures are mapped to httpx's exception types, as httpx's own
transport maps its own (refused: ``ConnectError``; reset, cut-short body:
``RemoteProtocolError`` / ``ReadError``; timeouts: ``ConnectTimeout`` /
``ReadTimeout``), so the client has one set of failures to classify whatever
carried the request (httpx-aiohttp itself calls a refused or reset connection
a timeout).
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
import httpx
from aiohappyeyeballs import AddrInfoType
from httpx_aiohttp import AiohttpTransport
from httpx_aiohttp.transport import AiohttpResponseStream
from yarl import URL

#: What a failed exchange may raise from aiohttp (or asyncio's own timeout around it).
_FAILURES = (httpx.TransportError, aiohttp.ClientError, TimeoutError)


def as_httpx_error(exc: BaseException) -> BaseException:
    """The httpx exception that stands for an aiohttp failure (``exc`` itself if it is none of them)."""
    root = exc.__cause__ if isinstance(exc, httpx.TransportError) and exc.__cause__ else exc
    message = f"{type(root).__name__}: {root}"
    mapped: type[httpx.TransportError]
    if isinstance(root, aiohttp.ConnectionTimeoutError):
        mapped = httpx.ConnectTimeout
    elif isinstance(root, TimeoutError):  # aiohttp's socket read timeout, asyncio's own
        mapped = httpx.ReadTimeout
    elif isinstance(root, aiohttp.ClientConnectorError):
        mapped = httpx.ConnectError
    elif isinstance(root, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        mapped = httpx.RemoteProtocolError
    elif isinstance(root, aiohttp.ClientOSError):
        mapped = httpx.ReadError
    elif isinstance(root, aiohttp.ClientResponseError):
        mapped = httpx.RemoteProtocolError
    elif isinstance(root, aiohttp.ClientError):
        mapped = httpx.NetworkError
    else:
        return exc
    return mapped(message)


class AiohttpAnswer:
    """An aiohttp response seen through the members of ``httpx.Response`` the LLM client reads.

    Its body is read once, by :meth:`aread` or line by line by
    :meth:`aiter_lines`; :meth:`aclose` gives the connection back (or closes
    it when the body was not read to its end, so the server sees the client leave).
    """

    __slots__ = ("_content", "_response", "headers", "status_code")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status_code: int = response.status
        self.headers: Mapping[str, str] = response.headers
        self._content: bytes | None = None

    @property
    def reason_phrase(self) -> str:
        """The status line's reason (the standard one when the server sent none, as httpx does)."""
        return self._response.reason or httpx.codes.get_reason_phrase(self.status_code)

    @property
    def content(self) -> bytes:
        """The body read by :meth:`aread`."""
        if self._content is None:
            raise httpx.ResponseNotRead()
        return self._content

    @property
    def text(self) -> str:
        """The body as text (UTF-8, undecodable bytes replaced)."""
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON (``ValueError`` when it is not)."""
        return json.loads(self.content)

    async def aread(self) -> bytes:
        """Read the whole body; aiohttp's failures raised as httpx's."""
        if self._content is None:
            try:
                self._content = await self._response.read()
            except _FAILURES as exc:
                raise as_httpx_error(exc) from exc
        return self._content

    async def aiter_lines(self) -> AsyncIterator[str]:
        """The body's lines as they arrive, without their line endings."""
        stream = self._response.content
        try:
            while line := await stream.readline():
                yield line.decode("utf-8", errors="replace").rstrip("\r\n")
        except _FAILURES as exc:
            raise as_httpx_error(exc) from exc

    async def aclose(self) -> None:
        """Give the connection back to the pool (closed instead if the body was not read to its end)."""
        self._response.release()
        await self._response.wait_for_close()


class AiohttpSender:
    """One aiohttp session (made on first use, inside the loop) for one endpoint's requests.

    Its connector opens up to ``connections`` connections (the endpoint's slots
    are the queue, so none waits inside aiohttp) and keeps idle ones for
    ``keepalive_expiry`` seconds; ``on_connect`` is called for each socket
    opened to connect (a public hook of aiohttp's connector, where a trace
    config would cost every request its callbacks).
    """

    def __init__(
        self,
        *,
        connections: int,
        keepalive_expiry: float,
        on_connect: Callable[[], None] | None = None,
    ) -> None:
        self._connections = connections
        self._keepalive_expiry = keepalive_expiry
        self._on_connect = on_connect
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, URL] = {}
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self.ssl_context = httpx.create_ssl_context()  # the slow part: here, in the caller's thread hop

    def _socket(self, addr_info: AddrInfoType) -> socket.socket:
        family, kind, proto, _name, _address = addr_info
        if self._on_connect is not None:
            self._on_connect()
        return socket.socket(family=family, type=kind, proto=proto)

    def session(self) -> aiohttp.ClientSession:
        """The endpoint's session (made now if this is the first request)."""
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._connections,
                limit_per_host=0,
                keepalive_timeout=self._keepalive_expiry,
                ssl=self.ssl_context,
                socket_factory=self._socket,
            )
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        found = self._timeouts.get(seconds)
        if found is None:
            # Every connect and every read within ``seconds``, as httpx.Timeout(seconds) means;
            # the whole exchange is bounded by its caller's deadline.
            found = aiohttp.ClientTimeout(total=None, sock_connect=seconds, sock_read=seconds)
            if len(self._timeouts) < 64:  # a deadline's remainder is rarely seen twice
                self._timeouts[seconds] = found
        return found

    def _url(self, url: str) -> URL:
        found = self._urls.get(url)
        if found is None:
            found = self._urls[url] = URL(url)
        return found

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], io_timeout: float
    ) -> AiohttpAnswer:
        """POST ``body``; return the answer once its headers have arrived (close it after reading)."""
        try:
            response = await self.session().request(
                "POST",
                self._url(url),
                data=body,
                headers=headers,
                timeout=self._timeout(io_timeout),
                allow_redirects=False,
            )
        except _FAILURES as exc:
            raise as_httpx_error(exc) from exc
        return AiohttpAnswer(response)

    def transport(self) -> httpx.AsyncBaseTransport:
        """httpx's transport interface on this sender's session (same connections, same limits)."""
        return _MappedTransport(verify=self.ssl_context, client=self.session)

    async def aclose(self) -> None:
        """Close the session and every connection it holds."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()


class _MappedBody(httpx.AsyncByteStream):
    def __init__(self, inner: AiohttpResponseStream) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except _FAILURES as exc:
            raise as_httpx_error(exc) from exc

    async def aclose(self) -> None:
        await self._inner.aclose()


class _MappedTransport(AiohttpTransport):
    """httpx-aiohttp's transport with aiohttp's failures mapped as :func:`as_httpx_error` maps them."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await super().handle_async_request(request)
        except _FAILURES as exc:
            raise as_httpx_error(exc) from exc
        assert isinstance(response.stream, AiohttpResponseStream)
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_MappedBody(response.stream),
            request=request,
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        # The session is the sender's to close; httpx closes its transport with the client.
        return None
