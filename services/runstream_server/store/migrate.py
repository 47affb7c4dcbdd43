"""Idempotent schema migrations from numbered SQL files (see ``migrations/README.md``).

Single node: ``migrations/``. A ClickHouse cluster: ``migrations/cluster/`` (twins of the
same names, ``ON CLUSTER``; see its README), chosen by passing ``cluster``.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any

from ..common.errors import ConfigError
from .client import classify, validate_database

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
CLUSTER_MIGRATIONS_DIR = MIGRATIONS_DIR / "cluster"
_FILE_RE = re.compile(r"^\d{4}_[a-z0-9_]+\.sql$")
_END_RE = re.compile(r";[ \t]*$", re.MULTILINE)
_CLUSTER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}\Z")

# The cluster's database and migrations record, rendered like the files. The record is
# one ReplicatedReplacingMergeTree for the whole cluster (no {shard} in its path; the
# replica name '{shard}-{replica}' is unique across shards): whichever server the runner
# is connected to, it reads and writes the same record, so a file is applied once per
# cluster, not once per server (a second run that does not see a record yet only
# repeats idempotent statements).
_CLUSTER_SETUP = (
    "CREATE DATABASE IF NOT EXISTS {db} ON CLUSTER '{cluster}'",
    "CREATE TABLE IF NOT EXISTS {db}.schema_migrations ON CLUSTER '{cluster}' "
    "(name String, checksum String, applied_at DateTime64(6, 'UTC') DEFAULT now64(6)) "
    "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{db}/schema_migrations', "
    "'{shard}-{replica}') ORDER BY name",
)


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[Path]:
    """The migration files of ``directory``, in the order they apply."""
    return sorted(p for p in directory.iterdir() if p.is_file() and _FILE_RE.match(p.name))


def split_statements(text: str) -> list[str]:
    """Statements of a migration file: each ends with ``;`` at the end of a line."""
    out = []
    for part in _END_RE.split(text):
        code = "\n".join(line for line in part.splitlines()
                         if not line.lstrip().startswith("--")).strip()
        if code:
            out.append(code)
    return out


def validate_cluster(cluster: str) -> str:
    """``cluster`` if it is a plain identifier, like a database name (it goes into SQL)."""
    if not isinstance(cluster, str) or not _CLUSTER_RE.match(cluster):
        raise ConfigError(f"invalid cluster name {cluster!r}: use [A-Za-z_][A-Za-z0-9_]{{0,63}}")
    return cluster


def render(text: str, database: str, cluster: str | None = None) -> list[str]:
    """The statements of ``text`` for ``database`` (placeholder ``{db}``) and, when given,
    ``cluster`` (placeholder ``{cluster}`` of the cluster files; their ``{shard}`` and
    ``{replica}`` are ClickHouse macros and stay as they are)."""
    db = validate_database(database)
    if cluster is None:
        return [s.replace("{db}", db) for s in split_statements(text)]
    name = validate_cluster(cluster)
    return [s.replace("{db}", db).replace("{cluster}", name) for s in split_statements(text)]


def _checksum(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def apply_migrations(client: Any, database: str, directory: Path | None = None,
                     cluster: str | None = None) -> list[str]:
    """Create ``database`` and apply every migration not yet recorded; return their names.

    Without ``cluster``: the single-node files (``directory``, default ``migrations/``).
    With ``cluster``: the cluster files (default ``migrations/cluster/``), the database and
    the record created ``ON CLUSTER``. Safe to call at every start: applied files are
    skipped. Raises ``ConfigError`` if a recorded file was edited after it was applied
    (or a bad name), ``RetryableError``/``PermanentError`` if the store fails.
    """
    db = validate_database(database)
    if cluster is not None:
        validate_cluster(cluster)
    if directory is None:
        directory = MIGRATIONS_DIR if cluster is None else CLUSTER_MIGRATIONS_DIR
    files = migration_files(directory)
    try:
        if cluster is None:
            client.command(f"CREATE DATABASE IF NOT EXISTS {db}")
            client.command(
                f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations "
                "(name String, checksum String, applied_at DateTime64(6, 'UTC') DEFAULT now64(6)) "
                "ENGINE = ReplacingMergeTree ORDER BY name")
        else:
            for stmt in _CLUSTER_SETUP:
                client.command(render(stmt, db, cluster)[0])
        recorded = dict(client.query(
            f"SELECT name, argMax(checksum, applied_at) FROM {db}.schema_migrations GROUP BY name"
        ).result_rows)
    except Exception as e:
        raise classify(e, f"preparing migrations of {db}") from e
    known = {p.name for p in files}
    for name in sorted(set(recorded) - known):
        log.warning("database %s has migration %s that this version does not know", db, name)
    applied = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        digest = _checksum(text)
        if path.name in recorded:
            if recorded[path.name] != digest:
                raise ConfigError(f"migration {path.name} changed after it was applied to {db}; "
                                  "migrations are never edited: add a new file instead"
                                  + _variant_hint(path, recorded[path.name], cluster))
            continue
        try:
            for stmt in render(text, db, cluster):
                client.command(stmt)
            client.insert(f"{db}.schema_migrations", [[path.name, digest]],
                          column_names=["name", "checksum"], settings={"async_insert": 0})
        except Exception as e:
            raise classify(e, f"applying migration {path.name} to {db}") from e
        log.info("applied migration %s to %s", path.name, db)
        applied.append(path.name)
    return applied


def _variant_hint(path: Path, recorded: str, cluster: str | None) -> str:
    """Why a recorded checksum may differ: ``path``'s twin of the other variant was applied."""
    other = (CLUSTER_MIGRATIONS_DIR if cluster is None else MIGRATIONS_DIR) / path.name
    if not other.is_file() or _checksum(other.read_text(encoding="utf-8")) != recorded:
        return ""
    if cluster is None:
        return " (the database has the cluster schema: pass --cluster)"
    return " (the database has the single-node schema, not the cluster one)"
