"""REST and gRPC on one port, as Milvus serves both on 19530.

uvicorn owns the listening socket; its HTTP protocol class is replaced by `SniffingProtocol`, which looks
at a connection's first bytes. A gRPC client opens with the HTTP/2 connection preface (`PRI * HTTP/2.0`);
anything else is HTTP/1.1 for the REST app. An HTTP/1.1 connection is handed to uvicorn's own protocol
(`transport.set_protocol`: from then on the transport calls it directly, at no cost per request); a
gRPC connection is relayed to the gRPC server listening on a private unix socket.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)

HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SNIFF_BYTES = 4  # "PRI " or an HTTP/1 method and its space ("GET ", "POST"...)


class _Pipe(asyncio.Protocol):
    """One side of a relay: what it receives is written to `peer`; flow control is passed across."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Pipe | None = None
        self._pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def link(self, peer: _Pipe) -> None:
        self.peer = peer
        for data in self._pending:
            peer.send(data)
        self._pending.clear()

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        if self.peer is None:
            self._pending.append(data)
        else:
            self.peer.send(data)

    def eof_received(self) -> bool | None:
        if self.peer is not None and self.peer.transport is not None and self.peer.transport.can_write_eof():
            self.peer.transport.write_eof()
            return True  # keep our side open for the answer
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    def pause_writing(self) -> None:  # our transport's buffer is full: stop reading the other side
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


def sniffing_protocol(http_protocol: type[asyncio.Protocol], grpc_socket_path: str) -> type[asyncio.Protocol]:
    """A uvicorn `http` protocol class: REST connections go to `http_protocol` (uvicorn's own, built with
    the same arguments), gRPC ones to the unix socket `grpc_socket_path`."""

    class SniffingProtocol(_Pipe):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__()
            self._kwargs = kwargs
            self._head = b""
            self._decided = False

        def data_received(self, data: bytes) -> None:
            if self._decided:
                super().data_received(data)
                return
            self._head += data
            if len(self._head) < SNIFF_BYTES and HTTP2_PREFACE.startswith(self._head):
                return  # too little to tell yet
            self._decided = True
            head, self._head = self._head, b""
            if head.startswith(HTTP2_PREFACE[:SNIFF_BYTES]):
                self._relay_to_grpc(head)
            else:
                self._hand_to_http(head)

        def _hand_to_http(self, head: bytes) -> None:
            assert self.transport is not None
            http = http_protocol(**self._kwargs)
            self.transport.set_protocol(http)
            http.connection_made(self.transport)
            http.data_received(head)

        def _relay_to_grpc(self, head: bytes) -> None:
            assert self.transport is not None
            self._pending.append(head)
            self.transport.pause_reading()  # until the gRPC side is connected
            loop = asyncio.get_running_loop()
            connecting = loop.create_task(loop.create_unix_connection(_Pipe, grpc_socket_path))
            connecting.add_done_callback(self._connected)

        def _connected(self, connecting: asyncio.Task[tuple[asyncio.BaseTransport, _Pipe]]) -> None:
            assert self.transport is not None
            if connecting.cancelled() or connecting.exception() is not None:
                log.warning("gRPC connection refused: the gRPC server is not reachable (%r)",
                            None if connecting.cancelled() else connecting.exception())
                self.transport.close()
                return
            _, upstream = connecting.result()
            upstream.link(self)  # what the gRPC server sent already, to the client
            self.link(upstream)  # what the client sent while connecting, to the gRPC server
            if not self.transport.is_closing():
                self.transport.resume_reading()

        def connection_lost(self, exc: Exception | None) -> None:
            if not self._decided:
                return
            super().connection_lost(exc)

    return SniffingProtocol
