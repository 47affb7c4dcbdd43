"""The ClickHouse store: connections, schema migrations, the projector's writer.

- ``client.connect(dsn, database)``: chDB in-process (``chdb:///dir``) or a server
  (``http(s)://``); ``client.drop_projections`` for ``runstream replay``.
- ``migrate.apply_migrations(client, database, cluster=None)``: numbered SQL files,
  never edited after landing: single-node in ``migrations/`` (see its README), or with a
  cluster name their twins in ``migrations/cluster/`` (Replicated ``*_local`` tables,
  Distributed tables of the single-node names, ``ON CLUSTER``; see its README).
- ``writer.StoreWriter``: one Arrow insert per table, with deduplication tokens.
- Reads live in ``api/queries.py`` (the one query module).

No cluster runs in the tests: the cluster variant is checked against the single-node
schema by applying both to chDB, the cluster one rewritten for a single server
(``tests/unit/test_cluster_schema.py``).
"""
