"""The projector: folds the event log into ClickHouse.

``processor`` is the pure fold (event-log records → rows); ``service`` is the loop
around it: consume → fold → batch → insert → commit.
"""
