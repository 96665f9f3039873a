"""The PostgreSQL backend's health check (miandan/db_engines/postgresql): no round trip on a live connection,
and a connection the server closed is still found and replaced before a request uses it."""

from __future__ import annotations

import time

import pytest
from django.db import connections
from django.db.backends.postgresql import base as stock

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def own_connection():
    """A second connection of the default alias, as a request thread would hold one (CONN_MAX_AGE)."""
    if connections["default"].vendor != "postgresql":
        pytest.skip("PostgreSQL only")
    conn = connections.create_connection("default")
    conn.ensure_connection()
    yield conn
    conn.close()


def _stock_checks(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = stock.DatabaseWrapper.is_usable

    def counted(self):
        calls.append(1)
        return real(self)

    monkeypatch.setattr(stock.DatabaseWrapper, "is_usable", counted)
    return calls


def test_the_settings_use_the_backend():
    assert connections["default"].settings_dict["ENGINE"] == "miandan.db_engines.postgresql"


def test_a_live_idle_connection_is_usable_without_a_statement(own_connection, monkeypatch):
    with own_connection.cursor() as cur:
        cur.execute("SELECT 1")
    calls = _stock_checks(monkeypatch)
    assert own_connection.is_usable() is True
    assert calls == []  # no SELECT 1 sent


def test_a_connection_the_server_closed_is_replaced_before_use(own_connection, monkeypatch):
    with own_connection.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
    with connections["default"].cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", [pid])
    time.sleep(0.2)  # the server's goodbye reaches the socket
    calls = _stock_checks(monkeypatch)
    assert own_connection.is_usable() is False
    assert calls == [1]  # the readable socket was checked the stock way
    # What Django does at the first query of a request: the dead connection is closed and a new one opened.
    own_connection.health_check_enabled, own_connection.health_check_done = True, False
    own_connection.close_if_health_check_failed()
    with own_connection.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        assert cur.fetchone()[0] != pid


def test_a_closed_connection_is_not_usable(own_connection):
    own_connection.connection.close()
    assert own_connection.is_usable() is False
