"""A TCP relay on 127.0.0.1 that a test can hold and cut: a network fault between two real peers.

Clients connect to :attr:`TcpProxy.port`; each connection is relayed to
``127.0.0.1:<upstream port>`` by two threads (one per direction). :meth:`hold_replies`
makes the relay swallow what the upstream sends back (an MQTT station then sees no
PUBACK while the broker has its PUBLISH), :meth:`cut` closes every relayed
connection at once, as a dropped link does, and new connections are relayed again.
It runs in the test's process (threads), and :meth:`close` stops it.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class TcpProxy:
    """Relays ``127.0.0.1:port`` to ``127.0.0.1:upstream_port``.

    Args:
        upstream_port: where connections are relayed to.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._hold = threading.Event()
        self._closed = False
        self.accepted = 0
        self._thread = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)
        self._thread.start()

    def hold_replies(self, hold: bool = True) -> None:
        """While held, bytes from the upstream to the client are read and dropped."""
        if hold:
            self._hold.set()
        else:
            self._hold.clear()

    def cut(self) -> None:
        """Close every relayed connection (both ends); later connections are relayed."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            for s in (a, b):
                with contextlib.suppress(OSError):  # already gone
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.cut()
        self._thread.join(10)

    # -- threads ------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), 5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)  # (the connect's timeout would end an idle relay)
            with self._lock:
                self._pairs.append((client, upstream))
                self.accepted += 1
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, reply: bool) -> None:
        try:
            while data := src.recv(65536):
                if reply and self._hold.is_set():
                    continue  # swallowed: the client never hears it
                dst.sendall(data)
        except OSError:
            pass  # cut, or the other side went away
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
