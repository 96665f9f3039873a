"""Django's PostgreSQL backend with a health check that costs no round trip on a live connection.

`CONN_HEALTH_CHECKS` makes Django call `is_usable()` at the first query of every request, and the stock
check is a `SELECT 1`: one more round trip and one more statement for PostgreSQL on every request that
touches the database (measured: the card list sent 2 statements for its 1 query; issue 14).

What the check is for is a persistent connection the server side has closed while it sat idle: a restart,
a failover, PgBouncer or a proxy dropping it. Such a socket is readable (the server's FATAL message, EOF or
a reset waits on it), while an idle live connection has nothing to say: nothing here LISTENs, and every
reply is read before Django hands the connection back. So: a readable socket, or one psycopg already knows
is closed or broken, gets the stock `SELECT 1` (which fails on a dead one, and Django reconnects); a quiet
one is used as it is. A server that vanished without a word (no FIN, no RST) fails the first real query
instead, which the API answers 503 `busy` (miandan.api.errors.database_unavailable), as it would the
`SELECT 1`'s own timeout.
"""

from __future__ import annotations

import select

from django.db.backends.postgresql import base


class DatabaseWrapper(base.DatabaseWrapper):
    def is_usable(self) -> bool:
        conn = self.connection
        if conn is None or conn.closed or conn.broken:
            return False
        try:
            readable, _, _ = select.select([conn.fileno()], [], [], 0)
        except (OSError, ValueError):  # the descriptor is gone
            return False
        return super().is_usable() if readable else True
