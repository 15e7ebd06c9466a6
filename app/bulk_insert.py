"""Inserting many rows fast and getting their ids back, in the caller's transaction.

On PostgreSQL the ids are drawn from the table's sequence in one query and the rows go
in with ``COPY … FROM STDIN``: no statement text to build or parse, whatever the number
of rows. (A 1,000-row ``INSERT … VALUES … RETURNING`` is one huge statement that psycopg
spends longer splitting and adapting than the server spends running it.) Elsewhere a
plain ``INSERT … RETURNING`` executemany.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

_JSON = (sa.JSON,)


def insert_rows(conn: Session | Connection, table: sa.Table, rows: list[dict[str, Any]], *,
                returning: bool = True) -> list[int]:
    """Insert ``rows`` (dicts keyed by column name, each with the same keys); their new ids, in order.

    Columns left out get NULL on PostgreSQL (``COPY`` knows no Python-side defaults): give
    every non-null column. With ``returning=False`` nothing is returned.
    """
    if not rows:
        return []
    connection = conn.connection() if isinstance(conn, Session) else conn
    if connection.dialect.name != "postgresql":
        if not returning:
            connection.execute(sa.insert(table), rows)
            return []
        stmt = sa.insert(table).returning(table.c.id, sort_by_parameter_order=True)
        return list(connection.execute(stmt, rows).scalars())
    ids: list[int] = []
    if returning:
        ids = sorted(connection.scalars(
            sa.text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) FROM generate_series(1, :n)"),
            {"table": table.name, "n": len(rows)}))
        rows = [{**row, "id": row_id} for row, row_id in zip(rows, ids)]
    copy_rows(connection, table, rows)
    return ids


def copy_rows(connection: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """``COPY`` rows into a PostgreSQL table, in the connection's transaction (JSON columns adapted)."""
    from psycopg.types.json import Json

    columns = list(rows[0])
    json_columns = {name for name in columns if isinstance(table.c[name].type, _JSON)}
    driver = connection.connection.driver_connection
    quoted = ", ".join(f'"{name}"' for name in columns)
    with driver.cursor() as cursor, cursor.copy(f'COPY "{table.name}" ({quoted}) FROM STDIN') as copy:
        for row in rows:
            copy.write_row([Json(row[name]) if name in json_columns else row[name] for name in columns])
