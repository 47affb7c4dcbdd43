"""The open-files limit of a serving process.

A gateway holds one socket per client stream, and every training process's upload
helper keeps one stream open while it runs: 2,000 running scripts are 2,000 sockets on
one gateway. A soft ``RLIMIT_NOFILE`` of 1,024, still the default of many systems and
container runtimes, would make the gateway fail to accept (``EMFILE``) every connection
past it. So every serving process (``runstream server`` and each role) raises its soft
limit to its hard limit at start, as Go's runtime does for Go servers. The hard limit is
the operator's (``ulimit -Hn``, systemd ``LimitNOFILE``, the container runtime).
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)

# Linux refuses a soft limit above fs.nr_open (1,048,576 unless changed), even when the
# hard limit is "unlimited".
NR_OPEN_PATH = "/proc/sys/fs/nr_open"
NR_OPEN_DEFAULT = 1 << 20


def _nr_open() -> int:
    try:
        with open(NR_OPEN_PATH) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return NR_OPEN_DEFAULT


def raise_open_files_limit() -> int:
    """Raise this process's soft open-files limit to its hard limit (to fs.nr_open when
    the hard limit is unlimited); return the soft limit in effect afterwards
    (``resource.RLIM_INFINITY`` if it is unlimited). Never raises: a limit that cannot
    be changed is logged and kept."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return soft
    target = _nr_open() if hard == resource.RLIM_INFINITY else hard
    if soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as e:
        log.warning("cannot raise the open-files limit from %d to %d: %s", soft, target, e)
        return soft
    return target
