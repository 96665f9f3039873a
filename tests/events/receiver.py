"""A tiny real webhook receiver for the event-stream tests: an HTTP server on a thread of the test process.

It checks every request's signature with the REFERENCE check of docs/events.md (written out here on its own,
not imported from events.services), fails the first `fail_first` requests and the first attempt of every event
whose id is in `fail_once`, and records what it accepted. Receivers deduplicate by event id (at least once).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def reference_verify(secret: str, timestamp: str, body: bytes, signature: str, tolerance: int = 300) -> bool:
    """The receiver-side check, exactly as docs/events.md shows it."""
    expected = "v1=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature) and abs(time.time() - int(timestamp)) <= tolerance


class Receiver:
    def __init__(self, *, secret: str, fail_first: int = 0, fail_once: set[int] | None = None,
                 delay: float = 0.0) -> None:
        self.secret, self.fail_first, self.fail_once, self.delay = secret, fail_first, set(fail_once or ()), delay
        self.lock = threading.Lock()
        self.requests = 0
        self.bad_signatures = 0
        self.accepted: list[dict] = []  # every 2xx answer, duplicates included, in arrival order
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                code = receiver.handle(self.headers, body)
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def handle(self, headers, body: bytes) -> int:
        if self.delay:
            time.sleep(self.delay)
        ok = reference_verify(self.secret, headers.get("X-Miandan-Timestamp", "0"), body,
                              headers.get("X-Miandan-Signature", ""))
        doc = json.loads(body)
        with self.lock:
            self.requests += 1
            if not ok:
                self.bad_signatures += 1
                return 401
            if self.requests <= self.fail_first:
                return 500
            if doc["id"] in self.fail_once:
                self.fail_once.discard(doc["id"])
                return 503
            if headers.get("X-Miandan-Event-Id") != str(doc["id"]):
                return 400
            self.accepted.append(doc)
        return 204

    def unique(self) -> list[dict]:
        """First copy of each event id, in arrival order (the receiver's dedupe)."""
        seen, out = set(), []
        with self.lock:
            for doc in self.accepted:
                if doc["id"] not in seen:
                    seen.add(doc["id"])
                    out.append(doc)
        return out

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
