"""Named prepared statements run through psycopg's libpq layer (``psycopg.pq``).

The single publish is one statement per message, and psycopg's cursor path around it
(query conversion, adapters, result transformer, the wait loop in Python) measured ~50 µs
per execute here, a fifth of a committed publish. Sending the already encoded parameters
with ``PQexecPrepared`` (which releases the GIL while it waits) skips that work; errors are
raised as the same psycopg exceptions the cursor path raises.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg import pq
from psycopg.errors import error_from_result

from fastshard_postgres.pool import PooledConnection

_OK = (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK)
#: SQLSTATE invalid_sql_statement_name: the statement is gone from the session (psycopg runs
#: DEALLOCATE ALL when it resets its own cache of prepared statements)
_NO_SUCH_STATEMENT = b"26000"


class Statement:
    """One named statement: its SQL and the type oid of each parameter."""

    __slots__ = ("name", "sql", "types")

    def __init__(self, name: str, sql: str, types: Sequence[int]) -> None:
        self.name = name.encode()
        self.sql = sql.encode()
        self.types = list(types)

    def run(
        self, conn: PooledConnection, params: Sequence[bytes | None], formats: Sequence[int]
    ) -> pq.abc.PGresult:
        """Execute on ``conn`` (preparing it there first if needed); the result on success."""
        pg = conn.pgconn
        if self.name not in conn.prepared:
            self._prepare(conn)
        # None is sent as NULL (psycopg's own calls do the same; its annotation is narrower)
        res = pg.exec_prepared(self.name, params, formats)  # type: ignore[arg-type]
        if res.status in _OK:
            return res
        if res.error_field(pq.DiagnosticField.SQLSTATE) == _NO_SUCH_STATEMENT:
            conn.prepared.discard(self.name)
            self._prepare(conn)
            res = pg.exec_prepared(self.name, params, formats)  # type: ignore[arg-type]
            if res.status in _OK:
                return res
        raise _error(pg, res)

    def _prepare(self, conn: PooledConnection) -> None:
        pg = conn.pgconn
        res = pg.prepare(self.name, self.sql, self.types)
        if res.status not in _OK:
            raise _error(pg, res)
        conn.prepared.add(self.name)


def _error(pg: pq.abc.PGconn, res: pq.abc.PGresult) -> psycopg.Error:
    if pg.status != pq.ConnStatus.OK:
        # the connection is gone; the statement may or may not have committed
        return psycopg.OperationalError(res.get_error_message() or "connection lost")
    return error_from_result(res)
