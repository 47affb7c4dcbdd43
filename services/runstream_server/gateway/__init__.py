"""The gateway: accepts client event streams, validates, stamps, appends to the log, acks.

``validation`` is pure; ``records`` turns a validated request into log records without
re-encoding events; ``service`` is the gRPC edge, the only place errors become status
codes.
"""
