"""A serving process raises its soft open-files limit to the hard limit
(services/runstream_server/common/fdlimit.py): a gateway needs a socket per client
stream. Checked in child processes started with a low limit (this process's own
limit is left alone)."""

from __future__ import annotations

import resource
import subprocess
import sys

PROBE = ("import resource; from runstream_server.common.fdlimit import "
         "raise_open_files_limit as r; got = r(); "
         "print(got, *resource.getrlimit(resource.RLIMIT_NOFILE))")


def _probe(soft: int, hard: int | None = None) -> tuple[int, int, int]:
    """(returned, soft, hard) in a child started with the given limits."""
    def lower() -> None:
        cur_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, cur_hard if hard is None else hard))
    out = subprocess.run([sys.executable, "-c", PROBE], preexec_fn=lower, capture_output=True,
                         text=True, timeout=60, check=True)
    got, s, h = (int(x) for x in out.stdout.split())
    return got, s, h


def test_the_soft_limit_is_raised_to_the_hard_limit():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    got, soft, h = _probe(64)
    assert h == hard
    expected = hard if hard != resource.RLIM_INFINITY else int(
        open("/proc/sys/fs/nr_open").read())
    assert soft == got == expected and soft > 64


def test_a_hard_limit_that_leaves_no_room_is_kept_without_error():
    assert _probe(64, 64) == (64, 64, 64)
