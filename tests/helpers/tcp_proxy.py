"""A loopback TCP proxy that fails connections the ways networks do.

Clients connect to ``proxy.port``; each connection is forwarded to ``127.0.0.1:target_port``
by two pump threads. Faults:

* ``black_hole(which)``: the chosen connections stop forwarding in both directions and are
  never closed, like a peer that vanished behind a NAT or a firewall that forgot the flow.
  The proxy's kernel still acknowledges what the client sends, so neither TCP keepalive nor a
  send timeout on the client notices: only a deadline of the client's own can.
* ``new_connections = "refuse"``: the listening socket is closed (connection refused);
  ``"silent"``: new connections are accepted and never answered; ``"pass"``: forwarded.

A connection that carried ``LISTEN`` is marked ``is_listener``, so the LISTEN connection alone
can be black-holed.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable


class ProxiedConnection:
    def __init__(self, client: socket.socket, upstream: socket.socket | None) -> None:
        self.client = client
        self.upstream = upstream
        self.is_listener = False
        #: Set: nothing is forwarded any more, and nothing is closed.
        self.holed = threading.Event()
        self.closed = threading.Event()

    def close(self) -> None:
        self.closed.set()
        for sock in (self.client, self.upstream):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()


class TcpProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.connections: list[ProxiedConnection] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._new_connections = "pass"
        self._listener: socket.socket | None = None
        self.port = 0
        self._open_listener()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/test"

    # -- faults -----------------------------------------------------------------------------

    @property
    def new_connections(self) -> str:
        return self._new_connections

    @new_connections.setter
    def new_connections(self, mode: str) -> None:
        assert mode in ("pass", "refuse", "silent"), mode
        self._new_connections = mode
        if mode == "refuse":
            self._close_listener()
        elif self._listener is None:
            self._open_listener()

    def black_hole(self, which: Callable[[ProxiedConnection], bool] = lambda c: True) -> int:
        """Stop forwarding on the open connections ``which`` selects; returns how many."""
        with self._lock:
            chosen = [c for c in self.connections if not c.closed.is_set() and which(c)]
        for connection in chosen:
            connection.holed.set()
        return len(chosen)

    def open_connections(self) -> list[ProxiedConnection]:
        with self._lock:
            return [c for c in self.connections if not c.closed.is_set()]

    # -- plumbing ---------------------------------------------------------------------------

    def _open_listener(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name="proxy-accept", daemon=True).start()

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()

    def _accept(self, listener: socket.socket) -> None:
        while not self._closing.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self._new_connections == "silent":
                connection = ProxiedConnection(client, None)
                connection.holed.set()
                with self._lock:
                    self.connections.append(connection)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            connection = ProxiedConnection(client, upstream)
            with self._lock:
                self.connections.append(connection)
            for source, sink, sniff in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(
                    target=self._pump, args=(connection, source, sink, sniff), name="proxy-pump", daemon=True
                ).start()

    def _pump(self, connection: ProxiedConnection, source: socket.socket, sink: socket.socket, sniff: bool) -> None:
        while not connection.closed.is_set():
            try:
                data = source.recv(65536)
            except OSError:
                break
            if not data:
                break
            if sniff and b"LISTEN " in data:
                connection.is_listener = True
            if connection.holed.is_set():
                # Swallow, never answer, never close: the socket stays open and ACKing.
                while not connection.closed.wait(0.5):
                    pass
                return
            try:
                sink.sendall(data)
            except OSError:
                break
        if not connection.holed.is_set():
            connection.close()

    def close(self) -> None:
        self._closing.set()
        self._close_listener()
        with self._lock:
            connections = list(self.connections)
        for connection in connections:
            connection.close()
