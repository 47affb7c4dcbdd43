"""Rate limits of the gateway per project and per API key: token buckets, pure (the
clock is passed in).

Each limited quantity (events, bytes, runs started) has one bucket per ``(entity,
project)``, and one per API key for the sum over a request's projects; a bucket refills
at ``rate`` per second up to ``rate * burst_s``. A request takes from the buckets of
every project it carries and of its key, all or nothing. It passes when each bucket
holds at least what it asks for, or is full (a request larger than the burst passes on
a full bucket and leaves it in debt, so no request size is refused for good).
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
    __slots__ = ("tokens", "t", "rate", "cap")

    def __init__(self, rate: float, cap: float, t: float) -> None:
        self.tokens = cap
        self.t = t
        self.rate = rate
        self.cap = cap

    def refill(self, now: float) -> None:
        self.tokens = min(self.cap, self.tokens + (now - self.t) * self.rate)
        self.t = now


_NAMES = ("events", "bytes", "runs started")


class ProjectQuotas:
    """``take(now, demands, key_id)``: demands are ``{(entity, project): (events, bytes,
    runs)}``; ``key_limits`` apply to the sum of a request's demands per API key."""

    def __init__(self, limits: Limits, key_limits: Limits | None = None) -> None:
        self.limits = limits
        self.key_limits = key_limits or Limits()
        self._families = {"project": limits, "key": self.key_limits}
        self._buckets: dict[tuple, _Bucket] = {}
        self.refused = 0

    @property
    def enabled(self) -> bool:
        return self.limits.enabled or self.key_limits.enabled

    def _bucket(self, key: tuple, rate: float, burst_s: float, now: float) -> _Bucket:
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._drop_full(now)
            b = self._buckets[key] = _Bucket(rate, rate * burst_s, now)
        else:
            b.refill(now)
        return b

    def _drop_full(self, now: float) -> None:
        for key, b in list(self._buckets.items()):
            b.refill(now)
            if b.tokens >= b.cap:
                del self._buckets[key]

    def take(self, now: float, demands: dict[tuple[str, str], tuple[int, int, int]],
             key_id: str = "") -> None:
        """Take every demand, or raise ``QuotaError`` (nothing taken) with the wait."""
        if not self.enabled:
            return
        subjects: list[tuple[str, str, tuple[int, ...]]] = [
            ("project", f"project {e}/{p}", amounts) for (e, p), amounts in demands.items()]
        if key_id and self.key_limits.enabled:
            total = tuple(sum(a[i] for a in demands.values()) for i in range(3))
            subjects.append(("key", f"API key {key_id}", total))
        taken = []
        wait = 0.0
        why = ""
        for family, name, amounts in subjects:
            lim = self._families[family]
            rates = (lim.events_per_s, lim.bytes_per_s, lim.runs_per_s)
            for i, (rate, amount) in enumerate(zip(rates, amounts, strict=True)):
                if not rate or not amount:
                    continue
                b = self._bucket((family, name, i), rate, lim.burst_s, now)
                need = min(amount, b.cap)
                if b.tokens >= need:
                    taken.append((b, amount))
                else:
                    w = (need - b.tokens) / rate
                    if w > wait:
                        wait = w
                        why = f"{name} is over its limit of {rate:g} {_NAMES[i]}/s"
        if wait > 0:
            self.refused += 1
            raise QuotaError(why, wait)
        for b, amount in taken:
            b.tokens -= amount
