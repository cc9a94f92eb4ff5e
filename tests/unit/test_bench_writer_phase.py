"""The API bench's split of open-loop latencies by whether the live writer was writing a batch."""

from __future__ import annotations

import pytest

from bench.api_latency import by_writer_phase


def test_requests_sent_inside_a_batch_span_count_as_during_the_write() -> None:
    spans = [(20.0, 20.1), (10.0, 10.1)]  # out of order on purpose
    sent = [10.0, 10.05, 10.1, 10.5, 19.9, 20.05, 20.2]
    latencies = [30.0, 40.0, 1.0, 2.0, 3.0, 50.0, 4.0]

    phase = by_writer_phase(sent, latencies, spans)

    # 10.0, 10.05 and 20.05 fall inside a span; 10.1 is at its end, so not
    assert phase["during_write"]["share"] == pytest.approx(3 / 7)
    assert phase["during_write"]["p50_ms"] == pytest.approx(40.0)
    assert phase["between_writes"]["p50_ms"] == pytest.approx(2.5)
    assert phase["between_writes"]["p99_ms"] < 4.0 < phase["during_write"]["p99_ms"]


def test_requests_before_the_first_batch_and_without_any_batch_are_between_writes() -> None:
    before = by_writer_phase([1.0, 2.0], [5.0, 6.0], [(3.0, 4.0)])
    assert before["during_write"] == {"share": 0.0, "p50_ms": None, "p99_ms": None}
    assert before["between_writes"]["share"] == 1.0

    none = by_writer_phase([1.0], [5.0], [])
    assert none["between_writes"]["p50_ms"] == 5.0
    assert none["during_write"]["share"] == 0.0
