"""``python -m bench [scenario ...] [--smoke | --quick | --render | --list] [--reps N]
[--out DIR]`` — see bench/harness.py."""

from .harness import main

raise SystemExit(main())
