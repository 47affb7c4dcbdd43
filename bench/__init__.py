"""Runstream benchmarks: ``python -m bench [scenario ...] [--quick]`` (``make bench``).

See ``bench/harness.py`` for how scenarios are run and recorded, and
``bench/scenarios/__init__.py`` for how to add one. Results: ``bench/RESULTS.md``.
"""
