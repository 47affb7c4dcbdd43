"""Per-project rate limits of the gateway: token buckets, pure (the clock is passed in).

Each limited quantity (events, bytes, runs started) has one bucket per ``(entity,
project)``: it refills at ``rate`` per second up to ``rate * burst_s``. A request takes
from the buckets of every project it carries, all or nothing. It passes when each
bucket holds at least what it asks for, or is full (a request larger than the burst
passes on a full bucket and leaves it in debt, so no request size is refused for good).
Otherwise ``QuotaError`` says how long until it would pass; nothing is taken.

Limits are per gateway process: with N gateways behind a balancer, a project may send
N times the limit in all. The table of buckets is bounded: above ``MAX_BUCKETS`` the
full ones (which hold no information) are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..common.errors import QuotaError

MAX_BUCKETS = 10_000


@dataclass(frozen=True)
class Limits:
    """Per project and second; 0 = unlimited."""

    events_per_s: float = 0.0
    bytes_per_s: float = 0.0
    runs_per_s: float = 0.0          # RunStart events (new and resumed sessions)
    burst_s: float = 2.0             # a bucket holds this many seconds of its rate

    @property
    def enabled(self) -> bool:
        return bool(self.events_per_s or self.bytes_per_s or self.runs_per_s)


class _Bucket:
    __slots__ = ("tokens", "t")

    def __init__(self, tokens: float, t: float) -> None:
        self.tokens = tokens
        self.t = t


class ProjectQuotas:
    """``take(now, demands)``: demands are ``{(entity, project): (events, bytes, runs)}``."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._rates = (limits.events_per_s, limits.bytes_per_s, limits.runs_per_s)
        self._names = ("events", "bytes", "runs started")
        self._buckets: dict[tuple, _Bucket] = {}
        self.refused = 0

    def _bucket(self, key: tuple, rate: float, now: float) -> _Bucket:
        cap = rate * self.limits.burst_s
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._drop_full(now)
            b = self._buckets[key] = _Bucket(cap, now)
        else:
            b.tokens = min(cap, b.tokens + (now - b.t) * rate)
            b.t = now
        return b

    def _drop_full(self, now: float) -> None:
        for key, b in list(self._buckets.items()):
            rate = self._rates[key[2]]
            if b.tokens + (now - b.t) * rate >= rate * self.limits.burst_s:
                del self._buckets[key]

    def take(self, now: float, demands: dict[tuple[str, str], tuple[int, int, int]]) -> None:
        """Take every demand, or raise ``QuotaError`` (nothing taken) with the wait."""
        if not self.limits.enabled:
            return
        taken = []
        wait = 0.0
        why = ""
        for project, amounts in demands.items():
            for i, (rate, amount) in enumerate(zip(self._rates, amounts, strict=True)):
                if not rate or not amount:
                    continue
                b = self._bucket((*project, i), rate, now)
                cap = rate * self.limits.burst_s
                need = min(amount, cap)
                if b.tokens >= need:
                    taken.append((b, amount))
                else:
                    w = (need - b.tokens) / rate
                    if w > wait:
                        wait = w
                        why = (f"project {project[0]}/{project[1]} is over its limit of "
                               f"{rate:g} {self._names[i]}/s")
        if wait > 0:
            self.refused += 1
            raise QuotaError(why, wait)
        for b, amount in taken:
            b.tokens -= amount
