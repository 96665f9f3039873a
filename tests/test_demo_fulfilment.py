"""`make demo` as a user runs it (SQLite, no broker, eager Celery): an order completes by itself within a minute.

The demo target starts the simulated merchant beside runserver; nothing else is started by hand. Stopping
the demo (Ctrl-C) stops the merchant too.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.servers import ROOT, free_port


def _get(url: str, token: str = "") -> dict:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.mark.timeout(240)
def test_make_demo_completes_an_order_by_itself(tmp_path):
    port, merchant_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in {"REDIS_URL", "CELERY_BROKER_URL", "DATABASE_URL", "MAKEFLAGS", "MFLAGS", "MAKELEVEL",
                        "MIANDAN_TEST_DB_NAME", "MIANDAN_MERCHANT_URL", "CELERY_TASK_ALWAYS_EAGER"}}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'demo.sqlite3'}"
    log = open(tmp_path / "demo.log", "w")
    proc = subprocess.Popen(["make", "demo", f"PORT={port}", f"MERCHANT_PORT={merchant_port}",
                             f"MERCHANT_STATE={tmp_path / 'merchant.sqlite3'}"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while not (_answers(port) and _answers(merchant_port)):
            assert proc.poll() is None, (tmp_path / "demo.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "demo.log").read_text()[-3000:]
            time.sleep(0.5)
        token = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c",
             "from vouchers.models import Voucher; from accounts.services import token_create; "
             "print(token_create(user=Voucher.objects.filter(status='issued').first().user, device_id='demo'))"],
            cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        body = json.dumps({"text": "帮我点一杯珍珠奶茶", "lat": 30.2741, "lng": 120.1551}).encode()
        req = urllib.request.Request(f"{base}/api/v1/orders/chat", data=body, method="POST", headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            order = json.loads(r.read())
        assert order["voucher"], order
        placed_at = time.monotonic()
        while True:
            status = _get(f"{base}/api/v1/orders/{order['id']}", token)
            if status["status"] in ("completed", "failed", "cancelled"):
                break
            assert time.monotonic() - placed_at < 60, status
            time.sleep(0.5)
        assert status["status"] == "completed", status
        assert [e["to_status"] for e in status["events"]] == [
            "placed", "sent_to_store", "accepted", "delivering", "completed"]
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()
    time.sleep(0.5)
    assert not _answers(merchant_port), "the simulated merchant outlived the demo"
