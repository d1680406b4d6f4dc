"""A bare HTTP/2 client (h2 over asyncio streams) that opens any number of streams on one connection.

httpx caps itself at 100 concurrent streams per connection (httpcore advertises
and honours MAX_CONCURRENT_STREAMS=100 on its side), so proving that the stub
holds 1,000 streams at once on ONE connection needs a client without that cap.
Like httpx, it sends each request body whole even when the answer comes first.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events
import h2.settings


@dataclass
class H2Result:
    """What came back on one stream."""

    status: int | None = None
    body: bytearray = field(default_factory=bytearray)
    reset: bool = False
    done: bool = False

    def json(self) -> Any:
        return json.loads(bytes(self.body))


class BareH2Client:
    """One cleartext HTTP/2 connection (prior knowledge); use ``async with``."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        self.host, self.port = parts.hostname, parts.port
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.results: dict[int, H2Result] = {}
        self.unsent: dict[int, bytes] = {}
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> BareH2Client:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.conn.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100_000,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**20,
            },
        )
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(2**30)
        self.writer.write(self.conn.data_to_send())
        # Wait for the server's SETTINGS so that its MAX_CONCURRENT_STREAMS applies.
        settings = False
        while not settings:
            for event in await self._receive():
                settings = settings or isinstance(event, h2.events.RemoteSettingsChanged)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.writer is not None
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass

    async def _receive(self) -> list[h2.events.Event]:
        assert self.reader is not None and self.writer is not None
        data = await self.reader.read(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        events = self.conn.receive_data(data)
        for event in events:
            self._handle(event)
        self._send_bodies()
        self.writer.write(self.conn.data_to_send())
        await self.writer.drain()
        return events

    async def post_many(self, path: str, payloads: list[dict[str, Any]]) -> list[H2Result]:
        """POST every payload as JSON, each on its own stream, all at once; wait for every answer."""
        assert self.writer is not None
        mine: list[int] = []
        for payload in payloads:
            body = json.dumps(payload).encode()
            stream_id = self.conn.get_next_available_stream_id()
            headers = [
                (":method", "POST"),
                (":scheme", "http"),
                (":authority", f"{self.host}:{self.port}"),
                (":path", path),
                ("content-type", "application/json"),
                ("content-length", str(len(body))),
            ]
            self.conn.send_headers(stream_id, headers)
            self.results[stream_id] = H2Result()
            self.unsent[stream_id] = body
            mine.append(stream_id)
        self._send_bodies()
        self.writer.write(self.conn.data_to_send())
        await self.writer.drain()
        while not all(self.results[s].done for s in mine):
            await self._receive()
        return [self.results[s] for s in mine]

    def _send_bodies(self) -> None:
        """Send as much of the request bodies as the flow-control windows allow."""
        progress = True
        while self.unsent and progress:
            progress = False
            for stream_id in list(self.unsent):
                if self.results[stream_id].reset:
                    del self.unsent[stream_id]
                    continue
                room = min(self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size)
                if room <= 0:
                    continue
                body = self.unsent[stream_id]
                chunk, rest = body[:room], body[room:]
                self.conn.send_data(stream_id, chunk, end_stream=not rest)
                progress = True
                if rest:
                    self.unsent[stream_id] = rest
                else:
                    del self.unsent[stream_id]

    def _handle(self, event: h2.events.Event) -> None:
        results = self.results
        if isinstance(event, h2.events.ResponseReceived):
            for name, value in event.headers:
                if name in (":status", b":status"):
                    results[event.stream_id].status = int(value)
        elif isinstance(event, h2.events.DataReceived):
            results[event.stream_id].body.extend(event.data)
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            results[event.stream_id].done = True
        elif isinstance(event, h2.events.StreamReset):
            results[event.stream_id].reset = True
            results[event.stream_id].done = True
        elif isinstance(event, h2.events.ConnectionTerminated):
            raise ConnectionError(f"the server sent GOAWAY: {event}")


async def post_many(
    url: str, path: str, payloads: list[dict[str, Any]], deadline_s: float = 30.0
) -> list[H2Result]:
    """POST every payload on its own stream of one new connection, all at once."""
    async with asyncio.timeout(deadline_s), BareH2Client(url) as client:
        return await client.post_many(path, payloads)
