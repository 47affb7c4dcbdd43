"""gateway/quota.py: per-project token buckets (pure, clock passed in)."""

from __future__ import annotations

import pytest
from runstream_server.common.errors import QuotaError
from runstream_server.gateway import quota
from runstream_server.gateway.quota import Limits, ProjectQuotas

P, Q = ("e", "p"), ("e", "q")


def test_unlimited_takes_anything():
    qs = ProjectQuotas(Limits())
    for t in range(100):
        qs.take(t * 1e-6, {P: (10**9, 10**12, 10**6)})


def test_events_pass_up_to_the_burst_then_at_the_rate():
    qs = ProjectQuotas(Limits(events_per_s=100, burst_s=2))
    qs.take(0.0, {P: (200, 0, 0)})                 # the full burst
    with pytest.raises(QuotaError) as info:
        qs.take(0.0, {P: (50, 0, 0)})
    assert info.value.retry_after_s == pytest.approx(0.5)
    assert "e/p" in str(info.value) and "100 events/s" in str(info.value)
    qs.take(0.5, {P: (50, 0, 0)})                  # refilled 50 in 0.5 s
    accepted = 0
    t = 0.5
    while t < 10.5:                                # 10 s of asking for 10x the rate
        t += 0.01
        try:
            qs.take(t, {P: (10, 0, 0)})
            accepted += 10
        except QuotaError:
            pass
    assert 1000 - 20 <= accepted <= 1000 + 20       # the rate, give or take one step


def test_projects_are_limited_separately_and_refusal_takes_nothing():
    qs = ProjectQuotas(Limits(events_per_s=10, burst_s=1))
    qs.take(0.0, {P: (10, 0, 0)})
    with pytest.raises(QuotaError):
        qs.take(0.0, {P: (1, 0, 0), Q: (5, 0, 0)})   # all or nothing...
    qs.take(0.0, {Q: (10, 0, 0)})                   # ...so Q still has its whole burst


def test_a_request_larger_than_the_burst_passes_on_a_full_bucket_and_leaves_debt():
    qs = ProjectQuotas(Limits(events_per_s=10, burst_s=1))
    qs.take(0.0, {P: (35, 0, 0)})
    with pytest.raises(QuotaError) as info:
        qs.take(1.0, {P: (10, 0, 0)})               # -25 + 10 = -15: 2.5 s to 10
    assert info.value.retry_after_s == pytest.approx(2.5)
    qs.take(3.5, {P: (10, 0, 0)})


def test_bytes_and_runs_have_their_own_buckets():
    qs = ProjectQuotas(Limits(bytes_per_s=1000, runs_per_s=1, burst_s=1))
    qs.take(0.0, {P: (10**6, 1000, 1)})             # events are not limited here
    with pytest.raises(QuotaError, match="bytes/s"):
        qs.take(0.0, {P: (1, 10, 0)})
    with pytest.raises(QuotaError, match="runs started/s"):
        qs.take(0.0, {P: (1, 0, 1)})
    assert qs.refused == 2


def test_the_bucket_table_stays_bounded(monkeypatch):
    monkeypatch.setattr(quota, "MAX_BUCKETS", 100)
    qs = ProjectQuotas(Limits(events_per_s=10, burst_s=1))
    for i in range(1000):
        qs.take(float(i), {("e", f"p{i}"): (1, 0, 0)})
    assert len(qs._buckets) <= 100


def test_a_key_limit_covers_the_sum_of_its_projects():
    qs = ProjectQuotas(Limits(events_per_s=100, burst_s=1), Limits(events_per_s=10, burst_s=1))
    qs.take(0.0, {P: (6, 0, 0), Q: (4, 0, 0)}, key_id="k1")     # 10: the key's burst
    with pytest.raises(QuotaError, match="API key k1 is over its limit of 10 events/s"):
        qs.take(0.0, {Q: (1, 0, 0)}, key_id="k1")
    qs.take(0.0, {Q: (50, 0, 0)}, key_id="k2")                 # another key: its own
    qs.take(0.0, {P: (50, 0, 0)})                              # no key (tests): projects only


def test_a_key_refusal_takes_nothing_from_the_projects():
    qs = ProjectQuotas(Limits(events_per_s=10, burst_s=1), Limits(events_per_s=5, burst_s=1))
    qs.take(0.0, {P: (5, 0, 0)}, key_id="k")
    with pytest.raises(QuotaError):
        qs.take(0.0, {P: (5, 0, 0)}, key_id="k")
    qs.take(0.0, {P: (5, 0, 0)}, key_id="other")               # P still had 5 left
