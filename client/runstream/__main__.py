"""``python -m runstream sync [DIR]``: the client's command line (``runstream sync`` of
the server package does the same)."""

import sys

from . import _sync

USAGE = "usage: python -m runstream sync [DIR] [--url URL] [--timeout S] [--clean]"

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "sync":
        print(USAGE, file=sys.stderr)
        sys.exit(2)
    sys.exit(_sync.main(sys.argv[2:]))
