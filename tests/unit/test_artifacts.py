"""Artifacts' building blocks: the client's manifest and digest, the server's
content-addressed blob store (resumable, deduplicated, verified)."""

from __future__ import annotations

import hashlib
import os
import tracemalloc

import pytest
from runstream.artifacts import Artifact, content_digest, file_digest
from runstream.errors import InvalidInput
from runstream_server.artifacts.blobs import LocalBlobStore
from runstream_server.common.errors import NotFoundError, PermanentError


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def files(tmp_path):
    d = tmp_path / "data"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_bytes(b"alpha")
    (d / "sub" / "b.bin").write_bytes(b"\x00\x01" * 1000)
    return d


# -- the client's artifact ---------------------------------------------------------------

def test_the_digest_names_the_content_whatever_the_order(files):
    one = Artifact("ds", "dataset", metadata={"rows": 1})
    one.add_file(files / "a.txt")
    one.add_file(files / "sub" / "b.bin", name="sub/b.bin")
    two = Artifact("ds", "dataset", description="other words", metadata={"rows": 2})
    two.add_dir(files)
    assert [e.path for e in two.entries()] == ["a.txt", "sub/b.bin"]
    assert one.digest == two.digest          # metadata and description are not content
    assert one.size == two.size == 5 + 2000
    (files / "a.txt").write_bytes(b"alphA")
    three = Artifact("ds", "dataset")
    three.add_dir(files)
    assert three.digest != one.digest         # one byte changed


def test_manifest_has_no_local_paths_and_entries_hold_their_digests(files):
    art = Artifact("model", "model")
    art.add_dir(files, name="weights")
    art.add_reference("s3://bucket/raw/x.tar", digest=sha(b"x"))
    m = art.manifest()
    assert m["name"] == "model" and m["digest"] == art.digest
    assert [e["path"] for e in m["entries"]] == ["weights/a.txt", "weights/sub/b.bin", "x.tar"]
    assert m["entries"][0] == {"path": "weights/a.txt", "digest": sha(b"alpha"), "size": 5}
    assert m["entries"][2] == {"path": "x.tar", "ref": "s3://bucket/raw/x.tar",
                               "digest": sha(b"x")}
    assert str(files) not in repr(m)
    assert content_digest(list(reversed(m["entries"]))) == art.digest


@pytest.mark.parametrize("call, match", [
    (lambda a, f: Artifact("bad name", "dataset"), "name"),
    (lambda a, f: Artifact("ok", ""), "type"),
    (lambda a, f: Artifact("ok", "t", metadata={"x": float("nan")}), "JSON"),
    (lambda a, f: a.add_file(f / "a.txt", name="../escape"), "relative"),
    (lambda a, f: a.add_file(f / "a.txt", name="/abs"), "relative"),
    (lambda a, f: a.add_file(f / "nope"), "no such file"),
    (lambda a, f: a.add_dir(f / "a.txt"), "no such directory"),
    (lambda a, f: a.add_reference("not a uri"), "URI"),
    (lambda a, f: a.add_reference("s3://b/k", digest="md5:abc"), "sha256"),
    (lambda a, f: [a.add_file(f / "a.txt"), a.add_file(f / "a.txt")], "already has"),
])
def test_bad_input_is_refused_by_the_call_that_caused_it(files, call, match):
    art = Artifact("ok", "dataset")
    with pytest.raises(InvalidInput, match=match):
        call(art, files)


def test_a_large_file_is_hashed_in_bounded_memory(tmp_path):
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(200 * 1024 * 1024)          # 200 MiB, sparse
    tracemalloc.start()
    digest, size = file_digest(big)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert size == 200 * 1024 * 1024 and digest.startswith("sha256:")
    assert peak < 8 * 1024 * 1024, peak       # about one 1 MiB read buffer


# -- the blob store ----------------------------------------------------------------------

def test_upload_in_chunks_resume_commit_and_read_back(tmp_path):
    store = LocalBlobStore(tmp_path / "blobs")
    data = os.urandom(3 * 1024 * 1024 + 17)
    d = sha(data)
    assert store.missing([d, d]) == [d] and store.received(d) == 0
    store.write(d, 0, data[:1_000_000])
    # The uploader died here; a new one asks where to continue.
    store2 = LocalBlobStore(tmp_path / "blobs")
    at = store2.received(d)
    assert at == 1_000_000
    with pytest.raises(PermanentError, match="continues at byte 1000000"):
        store2.write(d, 0, data[:10])           # a finished chunk is never taken twice
    store2.write(d, at, data[at:])
    assert not store2.has(d)                    # not visible before the commit
    store2.commit(d, len(data))
    assert store2.has(d) and store2.missing([d]) == [] and store2.size(d) == len(data)
    assert b"".join(store2.open(d)) == data
    assert b"".join(store2.open(d, offset=len(data) - 17)) == data[-17:]
    store2.commit(d, len(data))                 # again: a no-op


def test_a_blob_that_does_not_match_its_digest_is_discarded(tmp_path):
    store = LocalBlobStore(tmp_path)
    d = sha(b"right")
    store.write(d, 0, b"wrong")
    with pytest.raises(PermanentError, match="does not match"):
        store.commit(d, 5)
    assert not store.has(d) and store.received(d) == 0
    store.write(d, 0, b"right")
    with pytest.raises(PermanentError, match="does not match"):
        store.commit(d, 4)                      # the size is checked too


def test_put_deduplicates_and_errors_are_typed(tmp_path):
    store = LocalBlobStore(tmp_path)
    d = store.put(b"same")
    assert store.put(b"same") == d
    assert len(list((tmp_path / "blobs").rglob("*.*"))) == 0      # names are bare hex
    assert sum(1 for p in (tmp_path / "blobs").rglob("*") if p.is_file()) == 1
    for bad in ("sha256:XYZ", "md5:" + "0" * 32, "sha256:" + "A" * 64, "", None):
        with pytest.raises(PermanentError, match="digest"):
            store.has(bad)
    with pytest.raises(NotFoundError):
        store.open(sha(b"never"))
    with pytest.raises(PermanentError, match="no upload"):
        store.commit(sha(b"never"), 5)
