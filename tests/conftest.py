"""Shared test set-up.

Tests opt in to infrastructure with markers:
- ``kafka``: needs the real Kafka broker (fixture ``kafka_bootstrap``). With CI=true a
  broker that cannot start fails the test instead of skipping it.
- ``chdb``: uses the ClickHouse engine in-process (fixture ``store_dsn``, a fresh
  temporary data directory per test).
"""

import os

import pytest

pytest_plugins = ["tests.fixtures.kafka", "tests.fixtures.store"]

from tests.fixtures.identity import TEST_KEY  # noqa: E402 - after pytest_plugins


@pytest.fixture(autouse=True, scope="session")
def _runstream_dir(tmp_path_factory):
    """Client run journals (``<dir>/runstream-runs/``) of every test, and of every script
    a test starts (they inherit the environment), go to a temporary directory, never
    into the repository; tests that need another place pass ``dir=`` or set
    ``RUNSTREAM_DIR`` themselves (a test that removes it should ``chdir`` to a temporary
    directory). An upload helper whose training process ended with events the server
    did not take keeps trying for 10 s, not the default 5 minutes."""
    d = tmp_path_factory.mktemp("runstream-dir")
    # Every server a test starts makes TEST_KEY an admin key (RUNSTREAM_BOOTSTRAP_KEY), and
    # every client sends it (RUNSTREAM_API_KEY); tests of access rules make other users.
    env = {"RUNSTREAM_DIR": str(d), "RUNSTREAM_DRAIN_TIMEOUT": "10",
           "RUNSTREAM_BOOTSTRAP_KEY": TEST_KEY, "RUNSTREAM_API_KEY": TEST_KEY}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield d
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
