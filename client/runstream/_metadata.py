"""What the client records about the machine and the process at start."""

from __future__ import annotations

import getpass
import os
import platform
import socket
import sys

from .v1 import events_pb2

VERSION = "0.1.0"


def _username() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        return os.environ.get("USER", "unknown")


def capture() -> events_pb2.RunMetadata:
    mem = 0
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        pass
    return events_pb2.RunMetadata(
        hostname=socket.gethostname(),
        os=platform.platform(),
        python_version=platform.python_version(),
        python_executable=sys.executable,
        args=list(sys.argv),
        cpu_count=os.cpu_count() or 0,
        memory_bytes=mem,
        client_version=VERSION,
        username=_username(),
        program=sys.argv[0] if sys.argv else "",
    )
