"""The load balancer's configuration (deploy/cluster.py NginxProc), on a real nginx with throwaway upstreams."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.error
import urllib.request

import pytest

from tests.servers import deploy, free_port


class _Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def nginx_for(tmp_path):
    started = []

    def start(upstreams: list[int]):
        try:
            deploy().find_binary("nginx")
        except RuntimeError as exc:
            pytest.fail(str(exc))
        proc = deploy().NginxProc(tmp_path / f"nginx{len(started)}", port=free_port(), upstreams=upstreams)
        proc.start()
        started.append(proc)
        return f"http://127.0.0.1:{proc.port}"

    yield start
    for proc in started:
        proc.stop()


def test_headers_for_the_app_and_a_dead_node_skipped(nginx_for):
    echo = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    try:
        lb = nginx_for([free_port(), echo.server_address[1]])  # the first node is dead (nothing listens)
        for _ in range(4):  # round robin: every request lands on the live node
            request = urllib.request.Request(lb + "/x", headers={"X-Forwarded-For": "10.1.2.3"})
            with urllib.request.urlopen(request, timeout=5) as response:
                seen = json.loads(response.read())
            # The trusted edge (here the client on 127.0.0.1) named the client; nginx appends it once more, so
            # MIANDAN_PROXY_COUNT=1 reads 10.1.2.3.
            assert seen["x-forwarded-for"].split(",")[-1].strip() == "10.1.2.3"
            assert seen["x-request-start"].startswith("t=") and float(seen["x-request-start"][2:]) > 1e9
    finally:
        echo.shutdown()


def test_no_live_node_answers_503_busy_in_the_api_error_shape(nginx_for):
    lb = nginx_for([free_port(), free_port()])
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(urllib.request.Request(lb + "/api/v1/campaigns/x/join", data=b"{}", method="POST"),
                               timeout=5)
    error = caught.value
    assert error.code == 503
    assert error.headers["Retry-After"] == "1"
    assert json.loads(error.read()) == {"code": "busy", "detail": "活动太火爆了，请稍后再试", "retry_after": 1}
