"""The voucher engine's race tests again, every connection through PgBouncer in transaction pooling.

In transaction pooling each transaction may run on another server connection, so anything that outlives a
transaction breaks: server-side cursors (held over transactions), prepared statements, session advisory
locks, session SETs. MIANDAN_PGBOUNCER=1 turns server-side cursors off (and psycopg's statement preparing,
which Django's client-side binding does not use anyway: miandan/settings.py); the engine's locks are
transaction-scoped and its SETs are SET LOCAL. The pool here is smaller than the number of
racing threads, so transactions really do change server connections under the test.
"""

from __future__ import annotations

import psycopg
import pytest
from django.db import connection, connections

from miandan.settings import for_pgbouncer
from tests.servers import OwnPgBouncer
from tests.vouchers.test_concurrency import (
    test_200_concurrent_claims_for_one_user_across_sources_give_exactly_21_cards as _cap_race,
)
from tests.vouchers.test_concurrency import test_budget_for_n_cards_and_10n_users_over_http as _budget_race
from tests.vouchers.test_concurrency import test_same_user_joining_twice_at_once_gets_one_card as _twice_race

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("guard_off")]
POOL = 8  # server connections for 25 racing threads


@pytest.fixture(scope="module")
def pgbouncer(tmp_path_factory):
    bouncer = OwnPgBouncer(tmp_path_factory.mktemp("pgbouncer"), pool_size=POOL).start()
    yield bouncer
    bouncer.stop()


def _stats(port: int, database: str) -> int:
    """Transactions PgBouncer has passed to `database` (its admin console)."""
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="pgbouncer", autocommit=True,
                         prepare_threshold=None) as admin:
        rows = admin.execute("SHOW STATS").fetchall()
    return sum(int(row[1]) for row in rows if row[0] == database)  # total_xact_count


@pytest.fixture
def through_pgbouncer(pgbouncer, settings, django_db_blocker):
    """Every connection of this test (the main thread's and the racing threads') goes through PgBouncer,
    configured the way MIANDAN_PGBOUNCER=1 configures it."""
    db_settings = connections.settings["default"]
    saved = {k: db_settings.get(k) for k in ("HOST", "PORT", "DISABLE_SERVER_SIDE_CURSORS", "OPTIONS")}
    with connection.cursor() as cursor:  # the server's zone is UTC, so Django never SETs one per session
        cursor.execute(f"ALTER DATABASE {connection.ops.quote_name(db_settings['NAME'])} SET timezone TO 'UTC'")
    connections.close_all()
    db_settings.update(HOST="127.0.0.1", PORT=str(pgbouncer.port))
    for_pgbouncer(db_settings)
    connection.settings_dict.update({k: db_settings[k] for k in saved})
    before = _stats(pgbouncer.port, db_settings["NAME"])
    try:
        yield pgbouncer
        after = _stats(pgbouncer.port, db_settings["NAME"])
    finally:
        connections.close_all()
        for k, v in saved.items():
            if v is None:
                db_settings.pop(k, None)
                connection.settings_dict.pop(k, None)
            else:
                db_settings[k] = v
                connection.settings_dict[k] = v
    assert after > before + 20, "the test ran through PgBouncer"


def test_21_card_cap_through_pgbouncer(through_pgbouncer):
    _cap_race()


def test_exact_budget_through_pgbouncer(through_pgbouncer):
    _budget_race()


def test_one_welcome_card_through_pgbouncer(through_pgbouncer):
    _twice_race()


def test_iterating_a_queryset_survives_a_changed_server_connection(through_pgbouncer):
    """`.iterator()` on PostgreSQL opens a named cursor WITH HOLD on one server connection and FETCHes from it
    later; through transaction pooling the FETCH can land on another connection ("cursor does not exist").
    DISABLE_SERVER_SIDE_CURSORS (MIANDAN_PGBOUNCER=1) fetches client-side instead. Made deterministic: while
    the iterator is between chunks, another client holds the connection it used."""
    from tests.factories import VoucherFactory
    from vouchers.models import Voucher

    VoucherFactory.create_batch(6)
    rows = Voucher.objects.order_by("pk").iterator(chunk_size=2)
    first = next(rows)
    with psycopg.connect(host="127.0.0.1", port=through_pgbouncer.port, user="postgres",
                         dbname=connections.settings["default"]["NAME"], prepare_threshold=None) as other:
        other.execute("SELECT 1")  # a transaction is open: this client keeps the server connection
        rest = list(rows)
    assert len([first, *rest]) == 6
