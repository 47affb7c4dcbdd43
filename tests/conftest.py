"""Shared test set-up.

Tests opt in to infrastructure with markers:
- ``kafka``: needs the real Kafka broker (fixture ``kafka_bootstrap``). With CI=true a
  broker that cannot start fails the test instead of skipping it.
- ``chdb``: uses the ClickHouse engine in-process (fixture ``store_dsn``, a fresh
  temporary data directory per test).
"""

pytest_plugins = ["tests.fixtures.kafka", "tests.fixtures.store"]
