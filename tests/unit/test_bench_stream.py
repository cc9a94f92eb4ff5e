"""The stream benchmark's latency summary (pure)."""

from bench.stream import latency_summary


def test_summary_of_latencies_is_median_95th_and_max():
    latencies = [float(x) for x in range(100, 0, -1)]  # 1..100 s, in reverse order
    assert latency_summary(latencies) == {"p50_s": 50.5, "p95_s": 95.0, "max_s": 100.0}


def test_summary_of_no_latencies_is_missing_not_zero():
    assert latency_summary([]) == {"p50_s": None, "p95_s": None, "max_s": None}
