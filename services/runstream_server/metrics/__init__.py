"""Prometheus metrics of every role, served at ``/metrics`` on their own port.

- ``state.py``: what the services record themselves, plain Python without locks (one
  event loop updates and reads it): latency histograms, the api's request counts.
- ``collectors.py``: one collector per role, reading the services' own counters and
  state at scrape time (nothing is counted twice, nothing added to the ingest path but a
  few per-request updates).
- ``endpoint.py``: ``ServerMetrics``, one ``CollectorRegistry`` per ``Server`` (never the
  process-wide default one) and the small HTTP server that serves it.

The metric names, types and labels are listed in docs/configuration.md (Metrics).
"""
