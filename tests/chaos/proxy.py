"""A TCP proxy a test owns, in front of a shared service (PostgreSQL, RabbitMQ), that it can cut and stall.

The shared services must never be stopped by a test; pointing the processes under test at this proxy instead
gives the same faults from their side:
- `cut(seconds)`: every open connection is reset at once and new ones are refused (accepted and reset) for
  `seconds`, as when the server dies or a network partition starts;
- `stall(seconds)`: connections stay open but no byte moves either way for `seconds`, as with a GC pause, a
  saturated link or a frozen server; then everything that queued up flows on.

Threads, not asyncio: two pump threads per connection, a few dozen connections at most in a test.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time


class ChaosProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(256)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.pairs: set[tuple[socket.socket, socket.socket]] = set()
        self.refuse_until = 0.0
        self.stall_until = 0.0
        self.closed = False
        self.stats = {"accepted": 0, "refused": 0, "reset": 0, "cuts": 0, "stalls": 0}
        self.thread = threading.Thread(target=self._accept, name=f"proxy-{self.port}", daemon=True)

    def start(self) -> ChaosProxy:
        self.thread.start()
        return self

    # --- faults
    def cut(self, seconds: float) -> int:
        """Reset every connection now and refuse new ones for `seconds`; returns how many were reset."""
        with self.lock:
            self.refuse_until = time.monotonic() + seconds
            pairs, self.pairs = self.pairs, set()
            self.stats["cuts"] += 1
            self.stats["reset"] += len(pairs)
        for client, upstream in pairs:
            _reset(client)
            _reset(upstream)
        return len(pairs)

    def stall(self, seconds: float) -> None:
        """Hold every byte in both directions for `seconds` (connections stay open)."""
        with self.lock:
            self.stall_until = time.monotonic() + seconds
            self.stats["stalls"] += 1

    # --- plumbing
    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if time.monotonic() < self.refuse_until:
                self.stats["refused"] += 1
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = (client, upstream)
            with self.lock:
                self.pairs.add(pair)
                self.stats["accepted"] += 1
            threading.Thread(target=self._pump, args=(client, upstream, pair), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, pair), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, pair) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                while time.monotonic() < self.stall_until:
                    time.sleep(0.05)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self.lock:
                self.pairs.discard(pair)
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.listener.close()
        self.cut(0)


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), as a dead peer or a partition looks to the other side."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)  # wakes a pump thread blocked in recv() on it (close() alone does not)
    with contextlib.suppress(OSError):
        sock.close()
