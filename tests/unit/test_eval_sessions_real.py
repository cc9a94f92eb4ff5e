"""The session protocol on the real OpenCDP sample (skipped where the sample is not beside the repo)."""

from __future__ import annotations

from feature_store.lake import load_events
from feature_store.settings import Settings
from spark_jobs.candidates.bots import detect_bots
from spark_jobs.evaluation.sessions import evaluate_sessions
from tests.builders import SAMPLE, needs_sample


@needs_sample
def test_session_knn_beats_popularity_on_the_real_sample() -> None:
    events = load_events(Settings(_env_file=None), from_csv=SAMPLE)
    assert events.num_rows == 17_434
    assert len(detect_bots(events)) < 10  # a handful of fast users at most, not a share of the traffic
    result = evaluate_sessions(events, SAMPLE.name)
    assert result.test_sessions > 100
    knn, pop = result.scores["session_knn"], result.scores["popular"]
    assert knn["hr@20"] > pop["hr@20"] and knn["ndcg@20"] > pop["ndcg@20"], result.scores
