"""Artifacts: versioned, content-addressed sets of files (data sets, models).

    art = runstream.Artifact("mnist", type="dataset", metadata={"rows": 70000})
    art.add_file("train.csv")
    art.add_dir("images/", name="images")
    art.add_reference("s3://bucket/raw/mnist.tar.gz")

An artifact's **digest** names its content: the files' paths, sizes and SHA-256 digests
and the references' URIs, nothing else (not the metadata, the description or the local
paths). Logging the same content again therefore names the same version. Files are
hashed when added, reading 1 MiB at a time (a file of any size in bounded memory); a file
that changes after it was added is detected when it is uploaded.

Errors: bad names, paths that leave the artifact (``..``, absolute), a path added twice,
a missing file: ``InvalidInput`` (a ``ValueError``), raised by the call that caused it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import InvalidInput

# Names and types: what a URL path segment and a file name can hold on every platform.
NAME_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
# An entry path: at most this long, in "/"-separated parts.
MAX_PATH = 1024
# Bytes read per step when hashing: large enough for full disk speed, small enough that
# a 1 GB file costs nothing in memory.
CHUNK = 1 << 20
DIGEST_PREFIX = "sha256:"


def file_digest(path: str | os.PathLike) -> tuple[str, int]:
    """(``sha256:<hex>``, size) of a file, read in CHUNK steps. Raises ``OSError``."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return DIGEST_PREFIX + h.hexdigest(), size


def _entry_path(name: str) -> str:
    if not isinstance(name, str) or not name or len(name) > MAX_PATH:
        raise InvalidInput(f"artifact path must be 1..{MAX_PATH} characters, got {name!r}")
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or any(part in ("", ".", "..") for part in p.parts) or \
            "\x00" in name:
        raise InvalidInput(f"artifact path {name!r} must be relative, without . or ..")
    return p.as_posix()


def check_name(kind: str, value: str) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise InvalidInput(f"artifact {kind} {value!r}: use 1-128 of [A-Za-z0-9._-], "
                           "starting with a letter or digit")
    return value


@dataclass(frozen=True)
class Entry:
    """One file (``digest``, ``size``; ``local`` where it is read from) or reference
    (``ref``: a URI the artifact points at without holding its bytes)."""

    path: str
    digest: str = ""
    size: int = 0
    ref: str = ""
    local: str = ""

    def manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path}
        if self.ref:
            out["ref"] = self.ref
            if self.digest:
                out["digest"] = self.digest
        else:
            out["digest"], out["size"] = self.digest, self.size
        return out


class Artifact:
    """A set of files and references under a name and a type; see the module docstring."""

    def __init__(self, name: str, type: str, description: str | None = None,
                 metadata: dict[str, Any] | None = None) -> None:
        self.name = check_name("name", name)
        self.type = check_name("type", type)
        self.description = description or ""
        if metadata is not None and not isinstance(metadata, dict):
            raise InvalidInput("artifact metadata must be a dict")
        self.metadata = dict(metadata or {})
        try:
            json.dumps(self.metadata, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise InvalidInput(f"artifact metadata must be JSON: {e}") from None
        self._entries: dict[str, Entry] = {}

    # -- building ----------------------------------------------------------------------
    def _add(self, entry: Entry) -> Entry:
        if entry.path in self._entries:
            raise InvalidInput(f"artifact {self.name!r} already has {entry.path!r}")
        self._entries[entry.path] = entry
        return entry

    def add_file(self, local_path: str | os.PathLike, name: str | None = None) -> Entry:
        """Add one file, as ``name`` (default: its file name). Hashes it now."""
        local = Path(local_path)
        if not local.is_file():
            raise InvalidInput(f"no such file: {local}")
        path = _entry_path(name if name is not None else local.name)
        digest, size = file_digest(local)
        return self._add(Entry(path=path, digest=digest, size=size, local=str(local)))

    def add_dir(self, local_path: str | os.PathLike, name: str | None = None) -> list[Entry]:
        """Add every file under a directory (recursively, symbolic links followed to
        files), under ``name/`` (default: at the artifact's root), in path order."""
        root = Path(local_path)
        if not root.is_dir():
            raise InvalidInput(f"no such directory: {root}")
        prefix = _entry_path(name) + "/" if name else ""
        added = []
        for p in sorted(root.rglob("*")):
            if p.is_file():
                added.append(self.add_file(p, prefix + p.relative_to(root).as_posix()))
        return added

    def add_reference(self, uri: str, name: str | None = None,
                      digest: str | None = None) -> Entry:
        """Point at ``uri`` (``s3://``, ``gs://``, ``https://``, ``file://`` ...) without
        uploading it; ``digest`` (``sha256:<hex>``) when the caller knows it."""
        if not isinstance(uri, str) or "://" not in uri or len(uri) > 4096:
            raise InvalidInput(f"a reference is a URI such as s3://bucket/key, got {uri!r}")
        if digest is not None and not _is_digest(digest):
            raise InvalidInput(f"digest must be sha256:<64 hex digits>, got {digest!r}")
        path = _entry_path(name if name is not None else uri.rstrip("/").rsplit("/", 1)[-1])
        return self._add(Entry(path=path, ref=uri, digest=digest or ""))

    # -- reading -----------------------------------------------------------------------
    def entries(self) -> list[Entry]:
        """Every entry, in path order."""
        return [self._entries[p] for p in sorted(self._entries)]

    @property
    def size(self) -> int:
        """Bytes of the files (references count 0)."""
        return sum(e.size for e in self._entries.values())

    @property
    def digest(self) -> str:
        """``sha256:<hex>`` of the content (module docstring); the same for the same files
        and references, whatever the order they were added in."""
        return content_digest([e.manifest() for e in self.entries()])

    def manifest(self) -> dict[str, Any]:
        """What travels in the ``ArtifactLogged`` event (no local paths)."""
        return {"name": self.name, "type": self.type, "description": self.description,
                "metadata": self.metadata, "digest": self.digest,
                "entries": [e.manifest() for e in self.entries()]}

    def __repr__(self) -> str:
        return (f"Artifact({self.name!r}, type={self.type!r}, files={len(self._entries)}, "
                f"digest={self.digest[:19]}...)")


def _is_digest(value: str) -> bool:
    return (isinstance(value, str) and value.startswith(DIGEST_PREFIX)
            and re.fullmatch(r"[0-9a-f]{64}", value[len(DIGEST_PREFIX):]) is not None)


def content_digest(entries: list[dict[str, Any]]) -> str:
    """The digest of manifest entries: SHA-256 of their canonical JSON, sorted by path."""
    canon = [{k: e[k] for k in ("path", "digest", "size", "ref") if k in e}
             for e in sorted(entries, key=lambda e: e["path"])]
    text = json.dumps(canon, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return DIGEST_PREFIX + hashlib.sha256(text.encode()).hexdigest()
