"""A real local HTTP receiver for webhook deliveries (tests of the deliverer and of
work-order events): a tiny HTTP/1.1 server on port 0 that records requests and fails
when told to."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime

from services.clock import Clock, SystemClock


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: datetime  # the receiver's clock when it arrived (the signature's time)


@dataclass
class Receiver:
    """Answers 204, or 500 to the first ``fail_first`` requests (to all with
    ``always_fail``); with ``hang`` it never answers until closed."""

    clock: Clock = field(default_factory=SystemClock)
    fail_first: int = 0
    always_fail: bool = False
    hang: bool = False
    requests: list[Received] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self._released.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = (await reader.readline()).decode("latin-1").split()
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append(Received(request_line[1], headers, body, self.clock.now()))
            if self.hang:
                await self._released.wait()  # no answer at all
            failing = self.always_fail or len(self.requests) <= self.fail_first
            status, text = ("500 Internal Server Error", b"boom") if failing else ("204 OK", b"")
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Length: {len(text)}\r\n"
                f"Connection: close\r\n\r\n".encode()
                + text
            )
            await writer.drain()
        finally:
            writer.close()


@asynccontextmanager
async def running_receiver(clock: Clock | None = None) -> AsyncIterator[Receiver]:
    """A started receiver, closed on exit (the body of the tests' ``receiver`` fixtures)."""
    server = Receiver(clock) if clock is not None else Receiver()
    await server.start()
    try:
        yield server
    finally:
        await server.close()
