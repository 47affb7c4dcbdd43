"""The ClickHouse store: connections, schema migrations, the projector's writer.

- ``client.connect(dsn, database)``: chDB in-process (``chdb:///dir``) or a server
  (``http(s)://``); ``client.drop_projections`` for ``runstream replay``.
- ``migrate.apply_migrations(client, database)``: numbered single-node SQL files in
  ``migrations/`` (never edited after landing; see its README).
- ``writer.StoreWriter``: one Arrow insert per table, with deduplication tokens.
- Reads live in ``api/queries.py`` (the one query module).

The cluster variant (``migrations/cluster/``: ReplicatedMergeTree + Distributed,
``ON CLUSTER``, checked as text because no cluster runs here) is a later issue.
"""
