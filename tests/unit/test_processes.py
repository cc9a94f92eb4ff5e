"""Process supervision: pid records with start time, crash detection, group stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from services.stack.processes import (
    ProcessError,
    ProcessState,
    Supervisor,
    pid_alive,
    process_start_time,
    wait_for,
)

SLEEP = [sys.executable, "-c", "import time; time.sleep(300)"]


def log_lines(sup: Supervisor, name: str) -> list[str]:
    """Output lines of ``name`` (the log's header line quotes the argv, so match whole lines)."""
    return sup.log_path(name).read_text().splitlines()


@pytest.fixture
def sup(tmp_path: Path):
    supervisor = Supervisor(tmp_path)
    yield supervisor
    for pid_file in (tmp_path / "pids").glob("*.pid"):
        supervisor.stop(pid_file.stem, timeout=2)


def test_start_records_pid_and_start_time_and_logs(sup: Supervisor) -> None:
    pid = sup.start("talker", [sys.executable, "-u", "-c", "print('hello from talker'); import time; time.sleep(300)"])

    record = json.loads(sup.pid_path("talker").read_text())
    assert record["pid"] == pid
    assert record["start_time"] == process_start_time(pid)
    assert os.getpgid(pid) == pid  # its own process group
    assert sup.state("talker").state is ProcessState.RUNNING
    assert wait_for(lambda: "hello from talker" in log_lines(sup, "talker"), timeout=10)


def test_start_refuses_a_second_copy(sup: Supervisor) -> None:
    sup.start("one", SLEEP)
    with pytest.raises(ProcessError, match="already running"):
        sup.start("one", SLEEP)


def test_unknown_name_is_stopped_and_stop_is_a_no_op(sup: Supervisor) -> None:
    assert sup.state("nothing").state is ProcessState.STOPPED
    assert sup.stop("nothing").state is ProcessState.STOPPED


def test_exited_process_is_crashed_with_log_tail(sup: Supervisor) -> None:
    pid = sup.start("dies", [sys.executable, "-c", "import sys; print('fatal: out of widgets'); sys.exit(3)"])
    assert wait_for(lambda: not pid_alive(pid), timeout=10)

    status = sup.state("dies")
    assert status.state is ProcessState.CRASHED
    assert status.pid == pid
    assert "fatal: out of widgets" in status.detail.splitlines()
    assert str(sup.log_path("dies")) in status.detail

    sup.stop("dies")
    assert not sup.pid_path("dies").exists()
    assert sup.state("dies").state is ProcessState.STOPPED


def test_recycled_pid_is_crashed_and_never_killed(sup: Supervisor, tmp_path: Path) -> None:
    # A process that is not ours holds the recorded PID (as after PID reuse): the
    # start time in the pid file does not match its own.
    foreign = subprocess.Popen(SLEEP, start_new_session=True)
    try:
        sup.pid_path("svc").parent.mkdir(parents=True, exist_ok=True)
        start = process_start_time(foreign.pid)
        assert start is not None
        sup.pid_path("svc").write_text(json.dumps({"pid": foreign.pid, "start_time": start - 1, "token": "x"}))

        status = sup.state("svc")
        assert status.state is ProcessState.CRASHED
        assert "another process" in status.detail

        sup.stop("svc", timeout=1)
        assert foreign.poll() is None, "stop signalled a process that is not ours"
        assert pid_alive(foreign.pid)
        assert not sup.pid_path("svc").exists()
    finally:
        foreign.kill()
        foreign.wait()


def test_stop_kills_the_whole_process_group(sup: Supervisor, tmp_path: Path) -> None:
    child_pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time;"
        f"c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']);"
        f"open({str(child_pid_file)!r}, 'w').write(str(c.pid));"
        "time.sleep(300)"
    )
    leader = sup.start("parent", [sys.executable, "-c", script])
    assert wait_for(lambda: child_pid_file.exists() and child_pid_file.read_text() != "", timeout=10)
    child = int(child_pid_file.read_text())
    assert os.getpgid(child) == leader

    before = sup.stop("parent", timeout=5)

    assert before.state is ProcessState.RUNNING
    assert not pid_alive(leader)
    assert not pid_alive(child)
    assert not sup.pid_path("parent").exists()


def test_children_surviving_a_killed_leader_are_stopped(sup: Supervisor, tmp_path: Path) -> None:
    # As a Spark JVM outlives its Python driver after kill -9.
    child_pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time;"
        f"c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']);"
        f"open({str(child_pid_file)!r}, 'w').write(str(c.pid));"
        "time.sleep(300)"
    )
    leader = sup.start("driver", [sys.executable, "-c", script])
    assert wait_for(lambda: child_pid_file.exists() and child_pid_file.read_text() != "", timeout=10)
    child = int(child_pid_file.read_text())

    os.kill(leader, signal.SIGKILL)
    assert wait_for(lambda: not pid_alive(leader), timeout=10)
    assert pid_alive(child)
    assert sup.state("driver").state is ProcessState.CRASHED

    sup.stop("driver", timeout=5)
    assert not pid_alive(child)


def test_stop_escalates_to_sigkill(sup: Supervisor, caplog: pytest.LogCaptureFixture) -> None:
    ignores_term = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        "print('ready', flush=True); time.sleep(300)"
    )
    pid = sup.start("stubborn", [sys.executable, "-c", ignores_term])
    assert wait_for(lambda: "ready" in log_lines(sup, "stubborn"), timeout=10)

    with caplog.at_level("WARNING", logger="services.stack.processes"):
        sup.stop("stubborn", timeout=0.5)

    assert not pid_alive(pid)
    assert "sending SIGKILL" in caplog.text
    assert sup.state("stubborn").state is ProcessState.STOPPED


def test_missing_command_raises_a_clear_error(sup: Supervisor) -> None:
    with pytest.raises(ProcessError, match="cannot start ghost"):
        sup.start("ghost", ["/nonexistent/binary"])
