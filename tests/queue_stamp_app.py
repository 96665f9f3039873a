"""A WSGI app for tests/flash/test_admission_wait.py: answers with the queue stamp miandan.server's worker put in
its environ, after sleeping `?sleep=` seconds (to hold the worker's only thread)."""

import json
import time
from urllib.parse import parse_qs


def application(environ, start_response):
    if environ.get("PATH_INFO") == "/healthz":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    sleep = float(parse_qs(environ.get("QUERY_STRING", "")).get("sleep", ["0"])[0])
    served_at = time.time()
    time.sleep(sleep)
    body = json.dumps({"queued_at": environ.get("miandan.queued_at"), "served_at": served_at}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
