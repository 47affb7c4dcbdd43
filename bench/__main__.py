"""``python -m bench [scenario ...] [--quick] [--reps N] [--list]`` — see bench/harness.py."""

from .harness import main

raise SystemExit(main())
