"""The join's lock and statement with server-side binding on (`OPTIONS = {"server_side_binding": True}`).

Client-side binding (Django's default) sends the slot lock and the join's statement as one message; server-side
binding cannot carry two statements in one message, so the join then sends them one by one inside a transaction
(vouchers.services._join_insert_pg). The race tests again with every connection binding server-side.
"""

from __future__ import annotations

import psycopg
import pytest
from django.db import connection, connections

from tests.vouchers.test_concurrency import (
    test_200_concurrent_claims_for_one_user_across_sources_give_exactly_21_cards as _cap_race,
)
from tests.vouchers.test_concurrency import test_same_user_joining_twice_at_once_gets_one_card as _twice_race

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("guard_off")]


@pytest.fixture
def server_side_binding():
    if connection.vendor != "postgresql":
        pytest.fail("server-side binding is PostgreSQL's (set DATABASE_URL)")
    db_settings = connections.settings["default"]
    saved = dict(db_settings.get("OPTIONS", {}))
    connections.close_all()
    db_settings["OPTIONS"] = {**saved, "server_side_binding": True}
    connection.settings_dict["OPTIONS"] = db_settings["OPTIONS"]
    try:
        with connection.cursor() as cursor:
            assert not isinstance(cursor.cursor, psycopg.ClientCursor)  # the connections really bind server-side
        yield
    finally:
        connections.close_all()
        db_settings["OPTIONS"] = saved
        connection.settings_dict["OPTIONS"] = saved


def test_21_card_cap_with_server_side_binding(server_side_binding):
    _cap_race()


def test_one_welcome_card_with_server_side_binding(server_side_binding):
    _twice_race()
