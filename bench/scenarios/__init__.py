"""Benchmark scenarios: one module per scenario; the harness finds them by module name.

A scenario module defines:

``TITLE``      one line, the heading of its table in RESULTS.md
``ABOUT``      markdown: what is measured and how (workload, what the timer covers)
``METRICS``    list of ``harness.Metric``: the table's columns after the case name
``ORDER``      optional int, position in a full run (default 100; ties by name)
``REPS``       optional int, repetitions in a full run (at least ``harness.MIN_REPS``)
``params(quick) -> dict``          the workload sizes (recorded with the results)
``setup(ctx) -> state``            optional; untimed (start servers, load data)
``run_rep(ctx, state) -> dict``    one repetition: ``{case: {metric key: value}}``
``teardown(ctx, state)``           optional; always called after setup succeeded

``ctx`` is a ``harness.Context``: ``quick``, ``params``, ``rep``, ``tmp`` (a private
temporary directory, deleted afterwards), ``note(text)`` (a line under the table) and
``log(text)`` (progress on stderr). Each scenario runs in its own Python process, so
process-wide state (chDB's one data directory per process, the client's sender) never
leaks between scenarios. Never assert on time here: benchmarks record, tests check.
"""
