"""A loopback TCP proxy that can make its current connections go silent.

A silently dead connection (a NAT box that forgot it, a peer that vanished
without a FIN) cannot be produced on demand with a real server; this fault
injector forwards bytes until ``freeze()``, after which the connections that
exist stay open but carry nothing. New connections are forwarded normally.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading


class _Pair:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.frozen = False

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.close()


class FreezingProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._pairs: list[_Pair] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def freeze(self) -> None:
        """Every connection open now goes silent (bytes are swallowed); later ones work."""
        with self._lock:
            for pair in self._pairs:
                pair.frozen = True

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            for pair in self._pairs:
                pair.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            pair = _Pair(client, upstream)
            with self._lock:
                self._pairs.append(pair)
            threading.Thread(target=self._pump, args=(pair,), daemon=True).start()

    def _pump(self, pair: _Pair) -> None:
        selector = selectors.DefaultSelector()
        selector.register(pair.client, selectors.EVENT_READ, pair.upstream)
        selector.register(pair.upstream, selectors.EVENT_READ, pair.client)
        try:
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=0.2):
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = source.recv(65536)
                    if not data:
                        if not pair.frozen:
                            return
                        selector.unregister(source)  # a frozen pair never passes the close on
                        continue
                    if not pair.frozen:
                        key.data.sendall(data)
        except OSError:
            return
        finally:
            selector.close()
            if not pair.frozen:
                pair.close()
