"""Connections to ClickHouse: in-process chDB (``chdb:///dir``) or a server (``http(s)://``).

Both are clickhouse-connect clients, so the same SQL, writer and queries serve both.
A client is safe to share between threads (the query API and the projector do).

chDB facts that shape the callers: one process per data directory; and one data
directory per process *at a time* — opening a second path fails ("EmbeddedServer
already initialized with path ...") until every client of the first path is closed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.exceptions import (
    ClickHouseError,
    DatabaseError,
    DataError,
    OperationalError,
    ProgrammingError,
)

from ..common.errors import ConfigError, PermanentError, RetryableError, RunstreamError

_DB_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
_CODE_RE = re.compile(r"Code: (\d+)")

# Server error codes that mean "this input can never be accepted" (retrying is pointless).
# Everything else from the server (too many parts, memory, timeouts, replicas, keeper,
# unknown table while a migration is pending, ...) is treated as transient.
_PERMANENT_CODES = frozenset({
    6,    # CANNOT_PARSE_TEXT
    26,   # CANNOT_PARSE_QUOTED_STRING
    27,   # CANNOT_PARSE_INPUT_ASSERTION_FAILED
    36,   # BAD_ARGUMENTS
    41,   # CANNOT_PARSE_DATETIME
    42,   # NUMBER_OF_ARGUMENTS_DOESNT_MATCH
    43,   # ILLEGAL_TYPE_OF_ARGUMENT
    44,   # ILLEGAL_COLUMN
    47,   # UNKNOWN_IDENTIFIER
    53,   # TYPE_MISMATCH
    62,   # SYNTAX_ERROR
    69,   # ARGUMENT_OUT_OF_BOUND
    70,   # CANNOT_CONVERT_TYPE
    72,   # CANNOT_PARSE_NUMBER
    117,  # INCORRECT_DATA
    131,  # TOO_LARGE_STRING_SIZE
    184,  # ILLEGAL_AGGREGATION
    190,  # SIZES_OF_ARRAYS_DONT_MATCH
    215,  # NOT_AN_AGGREGATE
    321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    457,  # BAD_QUERY_PARAMETER
    456,  # UNKNOWN_QUERY_PARAMETER
})


def validate_database(database: str) -> str:
    """``database`` if it is a plain identifier (the only thing ever put into SQL text)."""
    if not isinstance(database, str) or not _DB_RE.match(database):
        raise ConfigError(f"invalid database name {database!r}: use [A-Za-z_][A-Za-z0-9_]{{0,63}}")
    return database


def run_query(client: Any, sql: str, parameters: dict[str, Any], what: str,
              classify_error: Callable[[BaseException, str], RunstreamError] | None = None):
    """``client.query(sql, parameters=...)``; a failure is raised in the server's error
    vocabulary (``classify``, or ``classify_error`` when given). Blocking."""
    try:
        return client.query(sql, parameters=parameters)
    except RunstreamError:
        raise
    except Exception as e:
        raise (classify_error or classify)(e, what) from e


def classify(exc: BaseException, what: str) -> RunstreamError:
    """The server's error vocabulary for a clickhouse-connect/chDB exception."""
    if isinstance(exc, RunstreamError):
        return exc
    msg = f"{what}: {exc}"
    if isinstance(exc, OperationalError):
        return RetryableError(msg)
    if isinstance(exc, (DataError, ProgrammingError)):
        return PermanentError(msg)
    if isinstance(exc, (DatabaseError, ClickHouseError)):
        m = _CODE_RE.search(str(exc))
        if m and int(m.group(1)) in _PERMANENT_CODES:
            return PermanentError(msg)
        return RetryableError(msg)
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return RetryableError(msg)
    if isinstance(exc, (ValueError, TypeError, OverflowError)):
        return PermanentError(msg)
    return RetryableError(msg)


def connect(dsn: str, database: str) -> Any:
    """A clickhouse-connect client for ``dsn`` (``chdb:///dir`` or ``http(s)://...``).

    ``database`` is validated here; SQL names it explicitly (``db.table``), so the client
    is not bound to it and works before the database exists (``apply_migrations`` makes it).
    Raises ``ConfigError`` for a bad DSN or name, ``RetryableError`` if the store cannot be
    reached (including a chDB directory held by another process).
    """
    validate_database(database)
    if dsn.startswith("chdb://"):
        path = dsn[len("chdb://"):]
        if not path or path == "/":
            raise ConfigError(f"chdb DSN needs a data directory: chdb:///path, got {dsn!r}")
        kwargs: dict[str, Any] = {}
    elif dsn.startswith(("http://", "https://")):
        # No session: the API and the projector run concurrent queries on one client,
        # which a ClickHouse HTTP session refuses.
        kwargs = {"autogenerate_session_id": False, "connect_timeout": 10,
                  "send_receive_timeout": 300}
    else:
        raise ConfigError(f"store DSN must be chdb:///dir, http:// or https://, got {dsn!r}")
    try:
        return clickhouse_connect.get_client(dsn=dsn, **kwargs)
    except Exception as e:
        raise RetryableError(f"cannot open the store at {_redact(dsn)}: {e}") from e


def _redact(dsn: str) -> str:
    """The DSN without a password."""
    return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", dsn)


def drop_projections(client: Any, database: str) -> list[str]:
    """Drop every table of ``database`` and the migrations record; return the names dropped.

    Every table of the store is a projection of the event log, so this plus
    ``apply_migrations`` plus a replay of the log rebuilds the store (``runstream
    replay``). Views go first so that nothing depends on a dropped table.
    """
    db = validate_database(database)
    try:
        rows = client.query(
            "SELECT name, engine FROM system.tables WHERE database = {db:String}",
            parameters={"db": db}).result_rows
        rows.sort(key=lambda r: (0 if r[1].endswith("View") else 1, r[0]))
        dropped = []
        for name, _engine in rows:
            if not _DB_RE.match(name):   # only our migrations create tables here
                raise PermanentError(f"unexpected table name {name!r} in {db}")
            client.command(f"DROP TABLE IF EXISTS {db}.`{name}` SYNC")
            dropped.append(name)
        return dropped
    except Exception as e:
        raise classify(e, f"dropping the tables of {db}") from e
