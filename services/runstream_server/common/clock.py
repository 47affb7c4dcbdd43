"""Server time. Crash detection uses only this clock, never client clocks."""

import time


def now_us() -> int:
    """Wall-clock microseconds since the Unix epoch, as stamped on events."""
    return time.time_ns() // 1_000
