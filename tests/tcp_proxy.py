"""A TCP proxy on 127.0.0.1 for fault tests: forwards, drops replies, blackholes.

``Proxy(port)`` listens on a free local port and forwards every connection to
``127.0.0.1:port``. ``drop_after(marker, seconds)`` arms it: the next client data
containing ``marker`` (say ``b"INSERT INTO"``) is forwarded, then every reply on
every connection is dropped and nothing more is forwarded, new connections
included (accepted, never answered), for ``seconds``; afterwards new connections
are forwarded again (the connections that were blackholed stay dead, as after a
real network partition their peers have given up).
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time


class Proxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.marker: bytes | None = None
        self.blackhole_seconds = 0.0
        self.blackhole_until = 0.0
        self.forwarded_marker = threading.Event()
        self.dead: set[int] = set()  # ids of connection pairs blackholed
        self._closed = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def drop_after(self, marker: bytes, seconds: float) -> None:
        with self._lock:
            self.marker = marker
            self.blackhole_seconds = seconds
            self.forwarded_marker.clear()

    def blackholing(self) -> bool:
        return time.monotonic() < self.blackhole_until

    def close(self) -> None:
        self._closed = True
        for sock in [self.listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self._sockets.append(client)
            if self.blackholing():
                threading.Thread(target=self._swallow, args=(client,), daemon=True).start()
                continue
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            self._sockets.append(server)
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _swallow(self, client: socket.socket) -> None:
        """A connection made during a blackhole: read and drop everything, forever."""
        try:
            while not self._closed and client.recv(65536):
                pass
        except OSError:
            pass

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        dead = False
        try:
            while not self._closed:
                ready, _, _ = select.select([client, server], [], [], 0.2)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if dead:
                        continue  # blackholed: nothing crosses, either way
                    if sock is client:
                        if self.blackholing():
                            dead = True
                            continue
                        server.sendall(data)
                        with self._lock:
                            if self.marker is not None and self.marker in data:
                                self.marker = None
                                self.blackhole_until = time.monotonic() + self.blackhole_seconds
                                self.forwarded_marker.set()
                        if self.blackholing():
                            dead = True
                    elif self.blackholing():
                        dead = True  # the reply (and all after it) is dropped
                    else:
                        client.sendall(data)
        except OSError:
            return
        finally:
            if not dead:
                client.close()
                server.close()
