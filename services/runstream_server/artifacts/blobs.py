"""A content-addressed blob store on a local directory (the embedded deployment's data
directory; production points the same interface at an S3-compatible store).

A blob is named by its digest, ``sha256:<64 hex digits>``, and stored once whatever
uses it. Uploads are resumable: ``received(digest)`` says how many bytes of an unfinished
upload are already here, ``write(digest, offset, data)`` appends at exactly that offset,
and ``commit(digest, size)`` checks size and SHA-256 before the blob becomes visible (an
atomic rename: a blob is there completely or not at all). A blob already stored is never
sent again (``missing``). ``open`` streams a stored blob from an offset.

Layout: ``<root>/blobs/<2 hex>/<62 hex>`` and ``<root>/partial/<64 hex>``. Not
thread-safe per digest: one upload of a blob at a time (the caller serialises; two
writers of one digest get ``PermanentError`` for the offset that no longer matches).

Errors: a malformed digest, a write at another offset than ``received``, a commit whose
bytes do not match: ``PermanentError``; a blob not stored: ``NotFoundError``; the disk
failing: ``OSError``.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..common.errors import NotFoundError, PermanentError

PREFIX = "sha256:"
_HEX_RE = re.compile(r"\A[0-9a-f]{64}\Z")
# Bytes per read when hashing or streaming a blob: bounded memory for any size.
CHUNK = 1 << 20


def parse_digest(digest: str) -> str:
    """The 64 hex digits of ``sha256:<hex>``; ``PermanentError`` otherwise."""
    if not isinstance(digest, str) or not digest.startswith(PREFIX) or \
            not _HEX_RE.match(digest[len(PREFIX):]):
        raise PermanentError(f"a blob digest is sha256:<64 lowercase hex digits>, got "
                             f"{str(digest)[:80]!r}")
    return digest[len(PREFIX):]


class LocalBlobStore:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        (self.root / "partial").mkdir(parents=True, exist_ok=True)

    def _blob(self, hexd: str) -> Path:
        return self.root / "blobs" / hexd[:2] / hexd[2:]

    def _partial(self, hexd: str) -> Path:
        return self.root / "partial" / hexd

    def has(self, digest: str) -> bool:
        return self._blob(parse_digest(digest)).is_file()

    def missing(self, digests: Iterable[str]) -> list[str]:
        """The digests of ``digests`` not stored yet, each once, in the order given."""
        seen: set[str] = set()
        out = []
        for d in digests:
            if d not in seen and not self.has(d):
                out.append(d)
            seen.add(d)
        return out

    def size(self, digest: str) -> int:
        path = self._blob(parse_digest(digest))
        try:
            return path.stat().st_size
        except FileNotFoundError:
            raise NotFoundError(f"blob {digest} is not stored") from None

    def received(self, digest: str) -> int:
        """Bytes of an unfinished upload of ``digest`` already here (0: none); the
        blob's size if it is stored already."""
        hexd = parse_digest(digest)
        if self._blob(hexd).is_file():
            return self._blob(hexd).stat().st_size
        try:
            return self._partial(hexd).stat().st_size
        except FileNotFoundError:
            return 0

    def write(self, digest: str, offset: int, data: bytes) -> int:
        """Append ``data`` to the upload of ``digest`` at ``offset`` (which must be
        ``received(digest)``); returns the bytes received so far."""
        hexd = parse_digest(digest)
        path = self._partial(hexd)
        have = path.stat().st_size if path.exists() else 0
        if offset != have:
            raise PermanentError(f"upload of {digest} continues at byte {have}, not {offset}")
        with open(path, "ab") as f:
            f.write(data)
        return have + len(data)

    def commit(self, digest: str, size: int) -> None:
        """Make the finished upload of ``digest`` visible after checking its ``size`` and
        SHA-256; a mismatch discards the upload. Committing a stored blob is a no-op."""
        hexd = parse_digest(digest)
        final = self._blob(hexd)
        if final.is_file():
            return
        path = self._partial(hexd)
        h = hashlib.sha256()
        n = 0
        try:
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
                    n += len(chunk)
                os.fsync(f.fileno())
        except FileNotFoundError:
            raise PermanentError(f"no upload of {digest} to commit") from None
        if n != size or h.hexdigest() != hexd:
            path.unlink(missing_ok=True)
            raise PermanentError(f"upload of {digest} does not match: {n} bytes with "
                                 f"sha256:{h.hexdigest()}, expected {size} bytes")
        final.parent.mkdir(exist_ok=True)
        os.replace(path, final)
        fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(fd)                 # the rename survives a power cut
        finally:
            os.close(fd)

    def put(self, data: bytes) -> str:
        """Store ``data`` whole; returns its digest (small blobs, tests)."""
        digest = PREFIX + hashlib.sha256(data).hexdigest()
        if not self.has(digest):
            self._partial(parse_digest(digest)).unlink(missing_ok=True)
            self.write(digest, 0, data)
            self.commit(digest, len(data))
        return digest

    def open(self, digest: str, offset: int = 0) -> Iterator[bytes]:
        """The bytes of a stored blob from ``offset``, CHUNK at a time."""
        path = self._blob(parse_digest(digest))
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            raise NotFoundError(f"blob {digest} is not stored") from None

        def chunks() -> Iterator[bytes]:
            with f:
                f.seek(offset)
                while chunk := f.read(CHUNK):
                    yield chunk
        return chunks()
