"""Minimal HTTP/1.1 server plumbing on asyncio streams, for the drain benchmark's loopback servers.

Enough for the two clients that talk to it (the AWS SDK's hyper client and lambda_runtime's
Runtime API client): keep-alive connections, Content-Length and chunked request bodies, responses
always with Content-Length. Standard library only.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Awaitable, Callable

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 8 * 1024 * 1024

REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           410: "Gone", 413: "Payload Too Large", 500: "Internal Server Error"}


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    peer: object = None


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Response]]


class BadRequest(Exception):
    pass


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """Reads one request; None when the client closed the connection between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if not e.partial.strip():
            return None
        raise BadRequest("connection closed inside the request head") from e
    except asyncio.LimitOverrunError as e:
        raise BadRequest("request head too large") from e
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, _version = lines[0].split(" ", 2)
    except ValueError as e:
        raise BadRequest("bad request line %r" % lines[0]) from e
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise BadRequest("bad header line %r" % line)
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                # trailers, up to the empty line
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
            if len(body) > MAX_BODY_BYTES:
                raise BadRequest("body too large")
        data = bytes(body)
    else:
        length = int(headers.get("content-length", "0") or "0")
        if length > MAX_BODY_BYTES:
            raise BadRequest("body too large")
        data = await reader.readexactly(length) if length else b""
    return Request(method=method, path=target, headers=headers, body=data)


def encode_response(resp: Response) -> bytes:
    head = ["HTTP/1.1 %d %s" % (resp.status, REASONS.get(resp.status, "Status"))]
    for name, value in resp.headers.items():
        head.append("%s: %s" % (name, value))
    head.append("Content-Length: %d" % len(resp.body))
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + resp.body


class Server:
    """A keep-alive HTTP/1.1 server on 127.0.0.1 and a port chosen by the OS."""

    def __init__(self, handler: Handler, name: str):
        self.handler = handler
        self.name = name
        self.server: asyncio.base_events.Server | None = None
        self.port = 0
        self._conns: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=MAX_HEADER_BYTES)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        try:
            while True:
                try:
                    req = await read_request(reader)
                except (BadRequest, ValueError) as e:
                    writer.write(encode_response(Response(400, str(e).encode(), {"Connection": "close"})))
                    await writer.drain()
                    return
                if req is None:
                    return
                req.peer = writer.get_extra_info("peername")
                resp = await self.handler(req)
                writer.write(encode_response(resp))
                await writer.drain()
                if req.headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:  # the bench is shutting down: drop the connection quietly
            return
        finally:
            self._conns.discard(writer)
            writer.close()

    async def close(self) -> None:
        if self.server is None:
            return
        self.server.close()
        for w in list(self._conns):
            w.close()
        try:
            await asyncio.wait_for(self.server.wait_closed(), 2)
        except (asyncio.TimeoutError, Exception):
            pass
        self.server = None
