"""Idempotent schema migrations from numbered SQL files (see ``migrations/README.md``)."""

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
_FILE_RE = re.compile(r"^\d{4}_[a-z0-9_]+\.sql$")
_END_RE = re.compile(r";[ \t]*$", re.MULTILINE)


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


def render(text: str, database: str) -> list[str]:
    """The statements of ``text`` for ``database`` (``{db}`` is the only placeholder)."""
    db = validate_database(database)
    return [s.replace("{db}", db) for s in split_statements(text)]


def _checksum(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def apply_migrations(client: Any, database: str,
                     directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Create ``database`` and apply every migration not yet recorded; return their names.

    Safe to call at every start: applied files are skipped. Raises ``ConfigError`` if a
    recorded file was edited after it was applied, ``RetryableError``/``PermanentError``
    if the store fails.
    """
    db = validate_database(database)
    files = migration_files(directory)
    try:
        client.command(f"CREATE DATABASE IF NOT EXISTS {db}")
        client.command(
            f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations "
            "(name String, checksum String, applied_at DateTime64(6, 'UTC') DEFAULT now64(6)) "
            "ENGINE = ReplacingMergeTree ORDER BY name")
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
                                  "migrations are never edited: add a new file instead")
            continue
        try:
            for stmt in render(text, db):
                client.command(stmt)
            client.insert(f"{db}.schema_migrations", [[path.name, digest]],
                          column_names=["name", "checksum"], settings={"async_insert": 0})
        except Exception as e:
            raise classify(e, f"applying migration {path.name} to {db}") from e
        log.info("applied migration %s to %s", path.name, db)
        applied.append(path.name)
    return applied
