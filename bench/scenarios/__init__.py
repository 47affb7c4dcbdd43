"""Benchmark scenarios: one module per scenario; the harness finds them by module name.

A scenario module defines:

``TITLE``      one line, the heading of its table in RESULTS.md
``ABOUT``      markdown: what is measured and how (workload, what the timer covers)
``METRICS``    list of ``harness.Metric``: the table's columns after the case name
``ORDER``      optional int, position in a full run (default 100; ties by name)
``REPS``       optional int, repetitions in a full run (at least ``harness.MIN_REPS``)
``SMOKE``      optional dict, overrides of ``params(True)`` for ``--smoke`` (one
               repetition, in ``make test``): sizes that still run every case in a few
               seconds; every key must be a key of ``params``
``GOALS``      optional list of plain dicts, targets shown in RESULTS.md's Goals table:
               ``{"label": str, "case": str, "metric": str, "target": float,
               "higher_is_better": bool}`` plus optionally ``"anchor": {"case": str,
               "metric": str, "label": str}`` (another case of the same scenario, e.g.
               wandb; the table shows how many times better). ``case`` is a key
               ``run_rep`` returns at full size; a goal whose case or metric is missing
               from the results is shown as not measured
``params(quick) -> dict``          the workload sizes (recorded with the results)
``setup(ctx) -> state``            optional; untimed (start servers, load data)
``run_rep(ctx, state) -> dict``    one repetition: ``{case: {metric key: value}}``
``teardown(ctx, state)``           optional; always called after setup succeeded

``ctx`` is a ``harness.Context``: ``quick`` (also true in smoke mode), ``smoke``,
``params``, ``rep``, ``tmp`` (a private temporary directory, deleted afterwards),
``note(text)`` (a line under the table) and ``log(text)`` (progress on stderr). Each
scenario runs in its own Python process, so process-wide state (chDB's one data
directory per process, the client's sender) never leaks between scenarios. Never assert
on time here: benchmarks record, tests check.
"""
