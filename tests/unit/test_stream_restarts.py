"""When the stream starts a failed query again (`RestartPolicy`, with explicit clock readings) and what it logs."""

from __future__ import annotations

from spark_jobs.stream import RestartPolicy, failure_summary


def test_the_wait_doubles_with_each_recent_failure_up_to_its_cap() -> None:
    policy = RestartPolicy(max_failures=10, period=600, first_delay=1, max_delay=10)
    assert [policy.after_failure(t) for t in range(6)] == [1, 2, 4, 8, 10, 10]


def test_it_gives_up_on_the_failure_past_the_limit_within_the_period() -> None:
    policy = RestartPolicy(max_failures=3, period=600)
    assert all(policy.after_failure(t) is not None for t in (0, 100, 200))
    assert policy.after_failure(300) is None


def test_failures_older_than_the_period_are_forgotten() -> None:
    policy = RestartPolicy(max_failures=2, period=600, first_delay=1)
    assert policy.after_failure(0) == 1
    assert policy.after_failure(100) == 2
    # the failure at 0 is out of the period: this is the second one in it, not the third
    assert policy.after_failure(650) == 2
    assert policy.after_failure(690) is None  # 100, 650 and 690 are in the period


def test_no_restarts_allowed_means_the_first_failure_ends_the_stream() -> None:
    assert RestartPolicy(max_failures=0).after_failure(0.0) is None


def test_the_failure_is_summed_up_by_the_error_line_not_the_query_description() -> None:
    message = (
        "An exception was raised by the Python Proxy. Return Message: Traceback (most recent call last):\n"
        '  File "online.py", line 9, in merge_panes\n'
        "    raise e\n"
        "redis.exceptions.ConnectionError: Error 111 connecting to 127.0.0.1:6379. Connection refused.\n"
        "\n"
        "=== Streaming Query ===\n"
        "Identifier: stream [id = 1, runId = 2]\n"
        "Current State: ACTIVE\n"
    )
    assert failure_summary(message) == (
        "redis.exceptions.ConnectionError: Error 111 connecting to 127.0.0.1:6379. Connection refused."
    )
    assert failure_summary("disk full") == "disk full"
