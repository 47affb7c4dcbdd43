"""The pure parts of runstream.Api: filters, order, paths, rows from series."""

from __future__ import annotations

import pytest
from runstream import api as A
from runstream import errors
from runstream.v1 import query_pb2


def test_filters():
    f = A.run_filter({"state": "running", "tags": ["a", "b"], "name": "res",
                      "config.lr": 0.1, "config": {"arch": "mlp"}})
    assert list(f.states) == ["running"] and list(f.tags) == ["a", "b"]
    assert f.name_contains == "res"
    assert [(c.key, c.json) for c in f.config] == [("lr", "0.1"), ("arch", '"mlp"')]
    assert list(A.run_filter({"state": {"$in": ["failed", "crashed"]}}).states) == [
        "failed", "crashed"]
    assert A.run_filter(None) == query_pb2.RunFilter()
    for bad in ({"summary.loss": 1}, {"config.": 1}, {"tags": 5}):
        with pytest.raises(errors.InvalidInput):
            A.run_filter(bad)


@pytest.mark.parametrize("order, expected", [
    (None, ("created_at", True)),
    ("+created_at", ("created_at", False)),
    ("name", ("name", False)),
    ("-summary.loss", ("summary.loss", True)),
    ("-summary_metrics.val/acc", ("summary.val/acc", True)),
    ("+config.lr", ("config.lr", False)),
    ("-createdAt", ("created_at", True)),
    ("display_name", ("name", False)),
])
def test_order(order, expected):
    assert A.sort_order(order) == expected


@pytest.mark.parametrize("order", ["loss", "-summary.", "config", "+foo"])
def test_bad_order(order):
    with pytest.raises(errors.InvalidInput):
        A.sort_order(order)


def test_paths(monkeypatch):
    monkeypatch.setenv("RUNSTREAM_ENTITY", "me")
    assert A._split_path("ent/proj", 2) == ["ent", "proj"]
    assert A._split_path("proj", 2) == ["me", "proj"]
    assert A._split_path("ent/proj/r1", 3) == ["ent", "proj", "r1"]
    assert A._split_path("/ent/proj/runs/r1/", 3) == ["ent", "proj", "r1"]
    assert A._split_path("proj/r1", 3) == ["me", "proj", "r1"]
    for path, n in (("", 2), ("a/b/c", 2), ("r1", 3), ("a/b/c/d/e", 3)):
        with pytest.raises(errors.InvalidInput):
            A._split_path(path, n)


def test_merge_rows():
    s1 = query_pb2.Series(key="a", step=[0, 2], value=[1.0, 3.0], time_us=[10, 30])
    s2 = query_pb2.Series(key="b", step=[1, 2], value=[5.0, 6.0], time_us=[20, 31])
    assert A.merge_rows([s1, s2]) == [
        {"_step": 0, "_timestamp": 1e-5, "a": 1.0},
        {"_step": 1, "_timestamp": 2e-5, "b": 5.0},
        {"_step": 2, "_timestamp": 3e-5, "a": 3.0, "b": 6.0},
    ]
