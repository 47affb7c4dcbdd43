"""The cluster schema (store/migrations/cluster/) mirrors the single-node one.

No ClickHouse cluster runs here, and chDB runs neither ``ON CLUSTER`` nor Replicated or
Distributed tables. ``cluster_schema_problems`` therefore checks the cluster files in
two ways: as text (the rules of ``cluster/README.md``: ``ON CLUSTER``, Replicated
engines with their Keeper path, deduplication settings, Distributed tables and their
sharding keys, views over the local tables, placeholders), and by applying them to chDB
rewritten for a single server (``ON CLUSTER`` removed, ``ReplicatedX('path', 'replica',
args)`` → ``X(args)``, ``Distributed`` → a ``Buffer`` over the local table, which reads
and writes it like a one-shard Distributed table), then comparing that database's
``system.tables`` / ``system.columns`` / ``system.data_skipping_indices`` with those of
the single-node migrations applied by ``apply_migrations``.
"""

from __future__ import annotations

import itertools
import re
import shutil
from pathlib import Path

import pytest
from runstream_server.common.errors import ConfigError
from runstream_server.config import ServerConfig, StoreConfig
from runstream_server.store.client import connect
from runstream_server.store.migrate import (
    CLUSTER_MIGRATIONS_DIR,
    MIGRATIONS_DIR,
    apply_migrations,
    migration_files,
    render,
    split_statements,
)

CLUSTER = "ci_cluster"
SINGLE_DB = "rs_single"
MACROS = {"shard", "replica"}              # ClickHouse macros: stay in the SQL text
PLACEHOLDERS = {"db", "cluster"} | MACROS
RUN_KEY = "cityHash64(project, run_id)"    # every table with a run_id column
# Tables without run_id and their sharding key (a function of their ReplacingMergeTree
# key, so that every version of a row lands on one shard).
OTHER_KEYS = {"workspaces": "cityHash64(project, `user`)"}
DEDUP_SETTINGS = ("replicated_deduplication_window", "replicated_deduplication_window_seconds")

_HEAD_RE = re.compile(r"^(CREATE (?:TABLE|MATERIALIZED VIEW) IF NOT EXISTS|ALTER TABLE) "
                      r"(\w+)\.(\w+) ON CLUSTER '([^']*)'")
_INSERT_RE = re.compile(r"^INSERT INTO (\w+)\.(\w+)")
_ENGINE_RE = re.compile(r"\bENGINE\s*=\s*(\w+)")
_DB_COUNTER = itertools.count()


# ---------------------------------------------------------------------------- parsing


def _engine(stmt: str) -> tuple[str, list[str], int, int] | None:
    """``(name, args, start, end)`` of the ``ENGINE = name(args)`` clause of ``stmt``."""
    m = _ENGINE_RE.search(stmt)
    if not m:
        return None
    end = m.end()
    if end < len(stmt) and stmt[end] == "(":
        depth, quote, i = 0, False, end
        while True:
            c = stmt[i]
            if c == "'":
                quote = not quote
            elif not quote and c == "(":
                depth += 1
            elif not quote and c == ")":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        return m.group(1), _split_args(stmt[end + 1:i]), m.start(), i + 1
    return m.group(1), [], m.start(), end


def _split_args(text: str) -> list[str]:
    """Top-level comma-separated arguments (parentheses and quotes respected)."""
    out, depth, quote, cur = [], 0, False, ""
    for c in text:
        if c == "'":
            quote = not quote
        elif not quote and c == "(":
            depth += 1
        elif not quote and c == ")":
            depth -= 1
        elif not quote and depth == 0 and c == ",":
            out.append(cur.strip())
            cur = ""
            continue
        cur += c
    if cur.strip():
        out.append(cur.strip())
    return out


def _key_columns(key: str) -> list[str]:
    m = re.fullmatch(r"cityHash64\((.*)\)", key)
    return [c.strip().strip("`") for c in m.group(1).split(",")] if m else []


def _settings(create_query: str) -> dict[str, str]:
    if " SETTINGS " not in create_query:
        return {}
    tail = create_query.rsplit(" SETTINGS ", 1)[1]
    return dict(kv.split(" = ", 1) for kv in tail.split(", "))


# ------------------------------------------------------------------------- text rules


def text_problems(directory: Path, db: str) -> list[str]:
    """The cluster files' rules that need no schema (``cluster/README.md``)."""
    problems = []
    for path in migration_files(directory):
        text = path.read_text(encoding="utf-8")
        for name in sorted(set(re.findall(r"\{([^{}]*)\}", text)) - PLACEHOLDERS):
            problems.append(f"{path.name}: unknown placeholder {{{name}}}")
        for stmt in render(text, db, CLUSTER):
            problems += [f"{path.name}: {p}" for p in _statement_problems(stmt, db)]
    return problems


def _statement_problems(stmt: str, db: str) -> list[str]:
    first = stmt.splitlines()[0]
    ins = _INSERT_RE.match(stmt)
    if ins:
        # An INSERT has no ON CLUSTER: it must go through the Distributed tables.
        out = [f"INSERT names a local table: {first}"] if "_local" in stmt else []
        if "insert_distributed_sync = 1" not in stmt:
            out.append(f"INSERT without insert_distributed_sync = 1: {first}")
        return out
    head = _HEAD_RE.match(stmt)
    if not head:
        return [f"statement without ON CLUSTER '{CLUSTER}' after its name: {first}"]
    kind, sdb, table, cluster = head.groups()
    out = []
    if sdb != db or cluster != CLUSTER:
        out.append(f"{table}: names database {sdb} / cluster {cluster}")
    if kind.startswith("CREATE MATERIALIZED VIEW"):
        names = re.findall(rf"\b{db}\.(\w+)", stmt[head.end():])
        if not names or any(not n.endswith("_local") for n in names):
            out.append(f"{table}: a view must read and write local tables, names {names}")
        return out
    if kind.startswith("CREATE TABLE"):
        out += _engine_problems(stmt, db, table)
    return out


def _engine_problems(stmt: str, db: str, table: str) -> list[str]:
    eng = _engine(stmt)
    if eng is None:
        return [f"{table}: no ENGINE"]
    name, args, _, _ = eng
    if name == "Distributed":
        if re.search(r"^\s*run_id\s", stmt, re.MULTILINE):
            want = RUN_KEY
        elif table in OTHER_KEYS:
            want = OTHER_KEYS[table]
        else:
            return [f"{table}: no run_id and no reviewed sharding key (OTHER_KEYS)"]
        if args != [f"'{CLUSTER}'", db, f"{table}_local", want]:
            return [f"{table}: Distributed{tuple(args)} is not ('{CLUSTER}', {db}, "
                    f"{table}_local, {want}) (sharding key)"]
        return []
    if not name.endswith("MergeTree"):
        return [f"{table}: unexpected engine {name}"]
    out = []
    if not name.startswith("Replicated"):
        out.append(f"{table}: engine {name} is not Replicated")
    else:
        path = f"'/clickhouse/tables/{{shard}}/{db}/{table}'"
        if args[:2] != [path, "'{replica}'"]:
            out.append(f"{table}: Keeper path and replica {args[:2]} are not {path}, '{{replica}}'")
    if not table.endswith("_local"):
        out.append(f"{table}: a stored table's name must end with _local")
    for setting in DEDUP_SETTINGS:
        if not re.search(rf"\b{setting} = \d+", stmt):
            out.append(f"{table}: no {setting} (insert deduplication)")
    if "non_replicated_deduplication_window" in stmt:
        out.append(f"{table}: non_replicated_deduplication_window on a replicated table")
    return out


# ----------------------------------------------------------------- parity through chDB


def single_server(stmt: str, seen: dict[str, tuple[str, list[str]]]) -> str:
    """``stmt`` as one server without a cluster runs it; records each CREATE TABLE's
    engine (name and arguments, as written) in ``seen``."""
    stmt = stmt.replace(f" ON CLUSTER '{CLUSTER}'", "")
    head = re.match(r"^CREATE TABLE IF NOT EXISTS (\w+)\.(\w+)", stmt)
    eng = _engine(stmt)
    if not head or eng is None:
        return stmt
    name, args, start, end = eng
    seen[head.group(2)] = (name, args)
    if name.startswith("Replicated") and name.endswith("MergeTree"):
        rest = args[2:]
        new = name[len("Replicated"):] + (f"({', '.join(rest)})" if rest else "")
    elif name == "Distributed" and len(args) == 4:
        new = f"Buffer({args[1]}, {args[2]}, 1, 0, 0, 0, 0, 0, 0)"
    else:
        return stmt
    return stmt[:start] + "ENGINE = " + new + stmt[end:]


def _tables(client, db: str) -> dict[str, dict]:
    rows = client.query(
        "SELECT name, engine, engine_full, sorting_key, partition_key, primary_key, "
        "sampling_key, create_table_query FROM system.tables WHERE database = {db:String}",
        parameters={"db": db}).named_results()
    return {r["name"]: r for r in rows if r["name"] != "schema_migrations"}


def _columns(client, db: str, table: str, stored: bool = True) -> list[tuple]:
    extra = ", compression_codec" if stored else ""
    return [tuple(r) for r in client.query(
        f"SELECT name, type, default_kind, default_expression{extra} FROM system.columns "
        "WHERE database = {db:String} AND table = {t:String} ORDER BY position",
        parameters={"db": db, "t": table}).result_rows]


def _indices(client, db: str, table: str) -> list[tuple]:
    return [tuple(r) for r in client.query(
        "SELECT name, type_full, expr, granularity FROM system.data_skipping_indices "
        "WHERE database = {db:String} AND table = {t:String} ORDER BY name",
        parameters={"db": db, "t": table}).result_rows]


def parity_problems(client, single_db: str, directory: Path, db: str) -> list[str]:
    """Apply the cluster files of ``directory`` to ``db`` as one server; compare with the
    single-node schema already applied to ``single_db``."""
    seen: dict[str, tuple[str, list[str]]] = {}
    client.command(f"CREATE DATABASE {db}")
    for path in migration_files(directory):
        for stmt in render(path.read_text(encoding="utf-8"), db, CLUSTER):
            try:
                client.command(single_server(stmt, seen))
            except Exception as e:
                return [f"{path.name}: does not apply ({stmt.splitlines()[0]}): "
                        f"{str(e).splitlines()[0][:300]}"]
    single, cluster = _tables(client, single_db), _tables(client, db)
    problems = []
    want = set()
    for t, s in single.items():
        want |= {t} if s["engine"] == "MaterializedView" else {t, f"{t}_local"}
    for t in sorted(want - set(cluster)):
        problems.append(f"{t}: missing from the cluster schema")
    for t in sorted(set(cluster) - want):
        problems.append(f"{t}: not in the single-node schema")
    for t, s in sorted(single.items()):
        if s["engine"] == "MaterializedView":
            if t in cluster:
                problems += _view_problems(s, cluster[t], single_db, db)
        elif f"{t}_local" in cluster and t in cluster:
            problems += _table_problems(client, t, s, cluster, seen, single_db, db)
    return problems


def _view_problems(s: dict, c: dict, single_db: str, db: str) -> list[str]:
    mirrored = c["create_table_query"].replace(f"{db}.", "DB.").replace("_local", "")
    if mirrored != s["create_table_query"].replace(f"{single_db}.", "DB."):
        return [f"{s['name']}: the view differs from the single-node one (over _local "
                f"tables): {c['create_table_query']}"]
    return []


def _table_problems(client, t, s, cluster, seen, single_db, db) -> list[str]:
    out = []
    local = cluster[f"{t}_local"]
    engine, _ = seen.get(f"{t}_local", ("?", []))
    if engine != "Replicated" + s["engine"]:
        out.append(f"{t}_local: engine {engine}, want Replicated{s['engine']}")
    for field in ("sorting_key", "partition_key", "primary_key", "sampling_key"):
        if local[field] != s[field]:
            out.append(f"{t}_local: {field} {local[field]!r}, want {s[field]!r}")
    if local["engine_full"].split(" SETTINGS ")[0] != s["engine_full"].split(" SETTINGS ")[0]:
        out.append(f"{t}_local: engine clause {local['engine_full']!r}, want "
                   f"{s['engine_full']!r}")
    ignore = set(DEDUP_SETTINGS) | {"non_replicated_deduplication_window"}
    ls = {k: v for k, v in _settings(local["create_table_query"]).items() if k not in ignore}
    ss = {k: v for k, v in _settings(s["create_table_query"]).items() if k not in ignore}
    if ls != ss:
        out.append(f"{t}_local: settings {ls}, want {ss}")
    want_cols = _columns(client, single_db, t)
    if _columns(client, db, f"{t}_local") != want_cols:
        out.append(f"{t}_local: columns differ from {t}: "
                   f"{sorted(set(_columns(client, db, f'{t}_local')) ^ set(want_cols))}")
    if _indices(client, db, f"{t}_local") != _indices(client, single_db, t):
        out.append(f"{t}_local: skipping indices differ from {t}")
    if seen.get(t, ("?",))[0] != "Distributed":
        out.append(f"{t}: engine {seen.get(t, ('?',))[0]}, want Distributed")
    else:
        key = seen[t][1][3] if len(seen[t][1]) == 4 else ""
        sort = [c.strip().strip("`") for c in s["sorting_key"].split(",")]
        if not _key_columns(key) or not set(_key_columns(key)) <= set(sort):
            out.append(f"{t}: sharding key {key!r} is not a cityHash64 of sorting key "
                       f"columns {sort}")
    want_dist = [c[:4] for c in want_cols]
    if _columns(client, db, t, stored=False) != want_dist:
        out.append(f"{t}: Distributed columns differ from {t}: "
                   f"{sorted(set(_columns(client, db, t, stored=False)) ^ set(want_dist))}")
    return out


def cluster_schema_problems(client, single_db: str, directory: Path) -> list[str]:
    """Everything wrong with the cluster files of ``directory`` (empty: none)."""
    single_names = [p.name for p in migration_files(MIGRATIONS_DIR)]
    names = [p.name for p in migration_files(directory)]
    problems = [f"{n}: no cluster twin" for n in single_names if n not in names]
    problems += [f"{n}: no single-node file of this name" for n in names
                 if n not in single_names]
    db = f"rs_cluster_{next(_DB_COUNTER)}"
    problems += text_problems(directory, db)
    problems += parity_problems(client, single_db, directory, db)
    return problems


# ------------------------------------------------------------------------------ tests


@pytest.fixture(scope="module")
def chdb(tmp_path_factory):
    """chDB with the single-node schema in SINGLE_DB (closed at the module's end)."""
    client = connect(f"chdb:///{tmp_path_factory.mktemp('cluster-schema') / 'chdb'}",
                     SINGLE_DB)
    try:
        apply_migrations(client, SINGLE_DB)
        yield client
    finally:
        client.close()


def test_every_single_node_file_has_a_cluster_twin_of_the_same_name():
    single = [p.name for p in migration_files(MIGRATIONS_DIR)]
    assert single and single == [p.name for p in migration_files(CLUSTER_MIGRATIONS_DIR)]
    assert (CLUSTER_MIGRATIONS_DIR / "README.md").is_file()


def test_cluster_files_follow_the_text_rules():
    assert text_problems(CLUSTER_MIGRATIONS_DIR, "rs") == []


@pytest.mark.chdb
def test_cluster_schema_mirrors_the_single_node_schema(chdb):
    assert cluster_schema_problems(chdb, SINGLE_DB, CLUSTER_MIGRATIONS_DIR) == []


@pytest.mark.chdb
def test_parity_covers_every_single_node_table(chdb):
    tables = _tables(chdb, SINGLE_DB)
    assert {"history_numeric", "history_other", "runs", "workspaces", "history_series",
            "history_series_mv", "history_rollup", "history_rollup_mv"} <= set(tables)


_RUNS_LOCAL = "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{db}/runs_local'"
BROKEN = {
    "column dropped": ("0002_runs.sql", "    seq_gaps          UInt64,\n", "",
                       "runs_local: columns differ"),
    "not replicated": (
        "0001_history.sql",
        "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{db}/history_other_local', "
        "'{replica}', seq)", "ReplacingMergeTree(seq)",
        "history_other_local: engine ReplacingMergeTree is not Replicated"),
    "alter without on cluster": (
        "0004_run_stop.sql", "ALTER TABLE {db}.runs_local ON CLUSTER '{cluster}' ADD",
        "ALTER TABLE {db}.runs_local ADD", "without ON CLUSTER"),
    "other sharding key": ("0006_history_series.sql", "cityHash64(project, run_id))",
                           "cityHash64(run_id))", "history_series: Distributed"),
    "view over the distributed table": (
        "0007_history_rollup.sql",
        "FROM {db}.history_numeric_local\nGROUP BY entity, project, run_id, key, block",
        "FROM {db}.history_numeric\nGROUP BY entity, project, run_id, key, block",
        "history_rollup_mv: a view must read and write local tables"),
    "unknown placeholder": ("0005_workspaces.sql", "{shard}/{db}/workspaces_local",
                            "{shard}/{db}/{table}", "unknown placeholder {table}"),
    "codec not changed": (
        "0008_history_codecs.sql",
        "ALTER TABLE {db}.history_other_local ON CLUSTER '{cluster}'\n"
        "    MODIFY COLUMN step UInt64 CODEC(DoubleDelta, ZSTD(1)),",
        "ALTER TABLE {db}.history_other_local ON CLUSTER '{cluster}'\n"
        "    MODIFY COLUMN step UInt64 CODEC(Delta, ZSTD(1)),",
        "history_other_local: columns differ"),
    "other order by": ("0005_workspaces.sql", "ORDER BY (entity, project, `user`)",
                       "ORDER BY (entity, `user`, project)", "workspaces_local: sorting_key"),
    "no dedup window": (
        "0006_history_series.sql",
        "SETTINGS replicated_deduplication_window = 10000, "
        "replicated_deduplication_window_seconds = 3600\n", "",
        "history_series_local: no replicated_deduplication_window"),
    "column not added to the distributed table": (
        "0003_summary_modes.sql",
        "ALTER TABLE {db}.runs ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS last_step "
        "Int64 DEFAULT -1\n;\n", "", "runs: Distributed columns differ"),
    "keeper path": ("0002_runs.sql", _RUNS_LOCAL,
                    _RUNS_LOCAL.replace("{shard}/", ""), "runs_local: Keeper path"),
    "insert into a local table": (
        "0006_history_series.sql", "INSERT INTO {db}.history_series (",
        "INSERT INTO {db}.history_series_local (", "INSERT names a local table"),
    "setting not changed": (
        "0009_history_compress_blocks.sql",
        "ALTER TABLE {db}.history_other_local ON CLUSTER '{cluster}'\n"
        "    MODIFY SETTING min_compress_block_size = 1048576\n;\n", "",
        "history_other_local: settings"),
}


@pytest.mark.chdb
@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_copy_is_rejected(chdb, tmp_path, case):
    name, old, new, expected = BROKEN[case]
    broken = tmp_path / "cluster"
    shutil.copytree(CLUSTER_MIGRATIONS_DIR, broken)
    path = broken / name
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{case}: the fixture no longer matches {name}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    problems = cluster_schema_problems(chdb, SINGLE_DB, broken)
    assert any(expected in p for p in problems), problems


@pytest.mark.chdb
def test_a_missing_twin_is_rejected(chdb, tmp_path):
    broken = tmp_path / "cluster"
    shutil.copytree(CLUSTER_MIGRATIONS_DIR, broken)
    (broken / "0009_history_compress_blocks.sql").unlink()
    problems = cluster_schema_problems(chdb, SINGLE_DB, broken)
    assert "0009_history_compress_blocks.sql: no cluster twin" in problems


# --------------------------------------------------------------------- runner wiring


class FakeClient:
    """Records what ``apply_migrations`` sends; ``recorded`` is schema_migrations."""

    def __init__(self, recorded: dict[str, str] | None = None) -> None:
        self.commands: list[str] = []
        self.inserts: list[tuple[str, list]] = []
        self.recorded = recorded or {}

    def command(self, sql: str) -> None:
        self.commands.append(sql)

    def query(self, sql: str):
        class Result:
            result_rows = list(self.recorded.items())
        return Result()

    def insert(self, table: str, rows: list, **_kw) -> None:
        self.inserts.append((table, rows))


def _rendered(directory: Path, db: str, cluster: str | None = None) -> list[str]:
    return [s for p in migration_files(directory)
            for s in render(p.read_text(encoding="utf-8"), db, cluster)]


def test_render_with_a_cluster_names_it_and_keeps_the_macros():
    text = (CLUSTER_MIGRATIONS_DIR / "0001_history.sql").read_text(encoding="utf-8")
    stmts = render(text, "rs", "prod")
    assert stmts and all("ON CLUSTER 'prod'" in s for s in stmts)
    assert not any("{db}" in s or "{cluster}" in s for s in stmts)
    assert "'/clickhouse/tables/{shard}/rs/history_numeric_local', '{replica}'" in stmts[0]
    assert "Distributed('prod', rs, history_numeric_local, cityHash64(project, run_id))" \
        in stmts[1]
    # Without a cluster, render is what it always was: {db} only.
    single = (MIGRATIONS_DIR / "0001_history.sql").read_text(encoding="utf-8")
    assert render(single, "rs") == [s.replace("{db}", "rs") for s in split_statements(single)]


@pytest.mark.parametrize("bad", ["bad name", "x'y", "1x", "", "a" * 65, "prod;DROP", "c-1",
                                 "{cluster}"])
def test_invalid_cluster_names_are_refused(bad):
    with pytest.raises(ConfigError):
        render("CREATE DATABASE {db} ON CLUSTER '{cluster}';\n", "rs", bad)
    client = FakeClient()
    with pytest.raises(ConfigError):
        apply_migrations(client, "rs", cluster=bad)
    assert client.commands == []
    if bad:                                  # an empty StoreConfig.cluster: no cluster
        with pytest.raises(ConfigError, match="invalid cluster name"):
            StoreConfig(dsn="http://ch:8123", cluster=bad).validate()


def test_store_config_cluster():
    StoreConfig(dsn="http://ch:8123", cluster="prod").validate()
    StoreConfig(dsn="https://ch:8443", cluster="prod_2").validate()
    StoreConfig().validate()                                   # no cluster: chDB is fine
    with pytest.raises(ConfigError, match="invalid cluster name"):
        StoreConfig(dsn="http://ch:8123", cluster="bad name").validate()
    StoreConfig(cluster="prod").validate()     # a gateway or reaper: it opens no store
    with pytest.raises(ConfigError, match="chDB runs no cluster"):
        StoreConfig(cluster="prod").validate_use()              # chDB under the data dir
    with pytest.raises(ConfigError, match="chDB runs no cluster"):
        StoreConfig(dsn="chdb:///tmp/x", cluster="prod").validate_use()
    StoreConfig(dsn="http://ch:8123", cluster="prod").validate_use()


@pytest.mark.parametrize("roles, refused", [(("gateway",), False), (("reaper",), False),
                                            (("projector",), True), (("api",), True)])
def test_only_roles_that_open_the_store_need_its_server(roles, refused):
    """One environment serves every role (deploy/k8s): a cluster name without a
    ClickHouse server stops the projector and the api, never a gateway or a reaper."""
    cfg = ServerConfig(roles=roles, store=StoreConfig(cluster="prod"))
    if refused:
        with pytest.raises(ConfigError, match="chDB runs no cluster"):
            cfg.validate()
    else:
        cfg.validate()


def test_apply_migrations_with_a_cluster_sends_the_cluster_files():
    client = FakeClient()
    names = apply_migrations(client, "rs", cluster="prod")
    assert names == [p.name for p in migration_files(CLUSTER_MIGRATIONS_DIR)]
    assert client.commands[0] == "CREATE DATABASE IF NOT EXISTS rs ON CLUSTER 'prod'"
    setup = client.commands[1]
    assert setup.startswith("CREATE TABLE IF NOT EXISTS rs.schema_migrations ON CLUSTER 'prod' ")
    assert ("ReplicatedReplacingMergeTree('/clickhouse/tables/rs/schema_migrations', "
            "'{shard}-{replica}') ORDER BY name") in setup
    assert client.commands[2:] == _rendered(CLUSTER_MIGRATIONS_DIR, "rs", "prod")
    assert [rows[0][0] for _t, rows in client.inserts] == names


def test_apply_migrations_without_a_cluster_is_unchanged():
    client = FakeClient()
    names = apply_migrations(client, "rs")
    assert names == [p.name for p in migration_files(MIGRATIONS_DIR)]
    assert client.commands == [
        "CREATE DATABASE IF NOT EXISTS rs",
        "CREATE TABLE IF NOT EXISTS rs.schema_migrations (name String, checksum String, "
        "applied_at DateTime64(6, 'UTC') DEFAULT now64(6)) ENGINE = ReplacingMergeTree "
        "ORDER BY name",
        *_rendered(MIGRATIONS_DIR, "rs")]


def test_the_wrong_variant_is_named_in_the_error():
    import hashlib
    first = migration_files(CLUSTER_MIGRATIONS_DIR)[0]
    digest = hashlib.sha256(first.read_text(encoding="utf-8").encode()).hexdigest()
    with pytest.raises(ConfigError, match="pass --cluster"):
        apply_migrations(FakeClient({first.name: digest}), "rs")
    single = migration_files(MIGRATIONS_DIR)[0]
    digest = hashlib.sha256(single.read_text(encoding="utf-8").encode()).hexdigest()
    with pytest.raises(ConfigError, match="single-node schema"):
        apply_migrations(FakeClient({single.name: digest}), "rs", cluster="prod")
    with pytest.raises(ConfigError, match="add a new file instead$"):
        apply_migrations(FakeClient({single.name: "0" * 64}), "rs")


def test_migrate_command_takes_the_cluster(monkeypatch):
    from runstream_server import cli, server
    seen = []
    monkeypatch.setattr(server, "open_store", lambda cfg: seen.append(cfg))
    assert cli.main(["migrate", "--clickhouse", "http://ch:8123", "--cluster", "prod"]) == 0
    monkeypatch.setenv("RUNSTREAM_CLUSTER", "prod_env")
    assert cli.main(["migrate", "--clickhouse", "http://ch:8123"]) == 0
    assert [c.store.cluster for c in seen] == ["prod", "prod_env"]
    assert cli.main(["migrate", "--clickhouse", "http://ch:8123", "--cluster", "bad name"]) == 2
    assert cli.main(["migrate", "--cluster", "prod"]) == 2          # chDB: no cluster
    assert cli.main(["replay", "--clickhouse", "http://ch:8123", "--cluster", "prod"]) == 2
    assert len(seen) == 2


def test_services_apply_the_cluster_variant_at_start(monkeypatch):
    from runstream_server import server
    from runstream_server.config import ServerConfig
    from runstream_server.store import client as store_client
    from runstream_server.store import migrate
    calls = []

    class Client:
        def __init__(self) -> None:
            self.settings: dict[str, str] = {}

        def set_client_setting(self, name: str, value: str) -> None:
            self.settings[name] = value
    clients = []
    monkeypatch.setattr(store_client, "connect",
                        lambda dsn, db: clients.append(Client()) or clients[-1])
    monkeypatch.setattr(migrate, "apply_migrations",
                        lambda c, db, cluster=None: calls.append((c, db, cluster)))
    server.open_store(ServerConfig(store=StoreConfig(dsn="http://ch:8123", cluster="prod")))
    server.open_store(ServerConfig(store=StoreConfig(dsn="http://ch:8123")))
    assert calls == [(clients[0], "runstream", "prod"), (clients[1], "runstream", None)]
    # On a cluster, inserts wait for the shards (offsets are committed after the store
    # has the rows) and reads go to the replica the inserts went to.
    assert clients[0].settings == {"insert_distributed_sync": "1", "load_balancing": "in_order"}
    assert clients[1].settings == {}
