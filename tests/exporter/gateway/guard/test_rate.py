"""Token buckets and the global spike detector, with explicit times."""

from __future__ import annotations

import random

from singularity_ops.exporter.gateway.guard.bans import Ban, BanList, Failures, bantime
from singularity_ops.exporter.gateway.guard.rate import Bucket, SpikeDetector


def test_a_bucket_lets_a_burst_through_then_one_request_per_refill() -> None:
    bucket = Bucket(3, now=0.0)
    assert [bucket.take(0.0, rate=0.5, burst=3) for _ in range(4)] == [0.0, 0.0, 0.0, 2.0]
    assert bucket.take(1.0, 0.5, 3) == 1.0  # half a token back after a second
    assert bucket.take(2.0, 0.5, 3) == 0.0
    assert bucket.take(100.0, 0.5, 3) == 0.0 and bucket.tokens == 2.0  # never more than the burst


def baseline(detector: SpikeDetector, seconds: int, rate: float, start: float = 0.0) -> float:
    rng, now = random.Random(3), start
    while now < start + seconds:
        now += rng.expovariate(rate)
        assert detector.observe(now) is None
    return now


def test_a_spike_starts_as_soon_as_the_count_passes_the_baseline_and_ends_with_the_interval() -> None:
    detector = SpikeDetector(interval=10, intervals=60, threshold=6, min_rate=1, now=0.0)
    now = baseline(detector, 600, rate=2.0)  # ten minutes at about 2 requests/s
    assert not detector.active and 15 < detector.median * 10 < 25
    start = (now // 10 + 1) * 10
    changes = [detector.observe(start + i * 0.01) for i in range(200)]  # 20 requests/s
    (started,) = [c for c in changes if c is not None]
    assert started.active and started.rate * 10 == changes.index(started) + 1 < 60 and started.z >= 6
    ended = detector.observe(start + 25)
    assert ended is not None and not ended.active and not detector.active


def test_no_spike_without_a_baseline_or_below_the_minimum_rate() -> None:
    young = SpikeDetector(interval=10, intervals=60, threshold=6, min_rate=1, now=0.0)
    assert all(young.observe(i * 0.001) is None for i in range(1000))  # the first minute has no baseline
    quiet = SpikeDetector(interval=10, intervals=60, threshold=6, min_rate=5, now=0.0)
    for minute in range(10):  # one request a minute, then 30 in ten seconds: still under 5/s
        quiet.observe(minute * 60.0)
    assert all(quiet.observe(600 + i * 0.3) is None for i in range(30))


def test_a_flood_that_lasts_becomes_the_new_baseline() -> None:
    detector = SpikeDetector(interval=10, intervals=12, threshold=6, min_rate=1, now=0.0)
    now = baseline(detector, 120, rate=1.0)
    flips = []
    for second in range(int(now) + 1, int(now) + 240):
        for i in range(20):
            change = detector.observe(second + i / 20)
            if change is not None:
                flips.append(change.active)
    assert flips[0] is True and flips[-1] is False and not detector.active


def test_fail2ban_failures_and_growing_bantimes() -> None:
    failures = Failures(maxretry=3)
    assert [failures.add(t, findtime=60) for t in (0, 10, 100)] == [False, False, False]
    assert failures.add(110, 60) is False and failures.add(120, 60) is True
    assert [bantime(s, 600, 2, 3600) for s in (1, 2, 3, 4)] == [600, 1200, 2400, 3600]


def test_a_ban_list_is_bounded_and_forgets_the_oldest_ended_bans_first() -> None:
    bans = BanList(max_clients=3, recidive_seconds=100)
    for i, until in enumerate((50, 1000, 2000, 3000)):
        bans.add(Ban(f"c{i}", "brute_force", "x", 0, until, 1), now=40)
    assert sorted(bans.bans) == ["c1", "c2", "c3"]
    assert bans.count_active(now=1500) == 2
    assert bans.strikes("c1", now=1050) == 2 and bans.strikes("c1", now=1101) == 1


def test_a_sync_keeps_unwritten_bans_and_drops_lifted_ones() -> None:
    bans = BanList(max_clients=10, recidive_seconds=100)
    written = Ban("a", "brute_force", "x", 0, 500, 1)
    pending = Ban("b", "brute_force", "x", 0, 500, 1)
    lifted_early = Ban("d", "brute_force", "x", 0, 500, 1)  # lifted before any sync saw it written
    for ban in (written, pending, lifted_early):
        bans.add(ban, 0)
    other = Ban("c", "brute_force", "from another gateway", 0, 500, 2)
    assert bans.merge([(written, False), (other, False), (lifted_early, True)], now=10) == ["d"]
    assert sorted(bans.bans) == ["a", "b", "c"] and bans.bans["c"].persisted and bans.bans["a"].persisted
    assert bans.merge([(written, True), (other, False)], now=20) == ["a"]
    assert sorted(bans.bans) == ["b", "c"]
