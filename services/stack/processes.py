"""Supervision of detached local processes, identified by PID *and* start time.

Every process runs in its own session (so its own process group), writes stdout
and stderr to ``<run_dir>/logs/<name>.log`` and is recorded in
``<run_dir>/pids/<name>.pid`` as JSON: its PID, its start time from
``/proc/<pid>/stat`` (clock ticks since boot) and a random token placed in its
environment. The start time is what makes a PID ours: a recycled PID has a
different start time and is never signalled. The token finds the children that
outlive their leader (a Spark JVM after ``kill -9`` of its Python driver), so
``stop`` can end them too. Linux only (it reads ``/proc``).
"""

from __future__ import annotations

import enum
import json
import logging
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

#: Environment variable that carries a process's ownership token to it and its children.
TOKEN_ENV = "CLICKREC_SUPERVISOR_TOKEN"

# Popen objects of the processes this interpreter started: kept so they are not
# garbage collected while running and so their exit can be reaped (no zombies).
_children: dict[int, subprocess.Popen[bytes]] = {}


class ProcessState(str, enum.Enum):
    """What a supervised name is doing."""

    RUNNING = "running"
    CRASHED = "crashed"  # pid file present, but the process is gone or is not ours
    STOPPED = "stopped"  # no pid file


@dataclass(frozen=True)
class PidRecord:
    """The content of a pid file."""

    pid: int
    start_time: int
    token: str
    argv: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProcessStatus:
    """The state of one supervised name; ``detail`` explains a crash (with the log's tail)."""

    name: str
    state: ProcessState
    pid: int | None = None
    detail: str = ""


@dataclass(frozen=True)
class _Stat:
    state: str
    pgid: int
    start_time: int


class ProcessError(RuntimeError):
    """A supervised process could not be started."""


def _read_stat(pid: int) -> _Stat | None:
    """Parse ``/proc/<pid>/stat``; ``None`` when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
        # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
        fields = raw[raw.rindex(")") + 2 :].split()
        return _Stat(state=fields[0], pgid=int(fields[2]), start_time=int(fields[19]))
    except (OSError, ValueError, IndexError):  # gone, or vanishing while we read
        return None


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, ``None`` if it does not exist."""
    stat = _read_stat(pid)
    return stat.start_time if stat else None


def _reap(pid: int) -> None:
    proc = _children.get(pid)
    if proc is not None and proc.poll() is not None:
        del _children[pid]


def pid_alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie (a zombie has exited, only unreaped)."""
    _reap(pid)
    stat = _read_stat(pid)
    return stat is not None and stat.state not in ("Z", "X")


def _alive_since(pid: int, start_time: int) -> bool:
    """True when ``pid`` is alive (not a zombie) and is the process that started at ``start_time``."""
    stat = _read_stat(pid)
    return stat is not None and stat.start_time == start_time and stat.state not in ("Z", "X")


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    members = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _read_stat(int(entry.name))
            if stat and stat.pgid == pgid and stat.state not in ("Z", "X"):
                members.append(int(entry.name))
    return members


def _has_token(pid: int, token: str) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{TOKEN_ENV}={token}".encode() in environ.split(b"\0")


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a text file ('' when it does not exist)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            data = fh.read()
    except FileNotFoundError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


class Supervisor:
    """Starts, inspects and stops named processes whose records live under ``run_dir``."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)

    def log_path(self, name: str) -> Path:
        """Where the output of ``name`` goes."""
        return self.run_dir / "logs" / f"{name}.log"

    def pid_path(self, name: str) -> Path:
        """Where the pid record of ``name`` lives."""
        return self.run_dir / "pids" / f"{name}.pid"

    def read_record(self, name: str) -> PidRecord | None:
        """The pid record of ``name``, ``None`` if absent or unreadable."""
        try:
            data = json.loads(self.pid_path(name).read_text())
            return PidRecord(int(data["pid"]), int(data["start_time"]), str(data["token"]), tuple(data.get("argv", ())))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            logger.warning("ignoring unreadable pid file %s", self.pid_path(name))
            return None

    def _is_ours(self, rec: PidRecord) -> bool:
        return _alive_since(rec.pid, rec.start_time)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> int:
        """Start ``argv`` detached as ``name`` and return its PID.

        Raises ProcessError if ``name`` is already running (``stop`` it first) or
        the command cannot be executed.
        """
        if self.state(name).state is ProcessState.RUNNING:
            raise ProcessError(f"{name} is already running (pid file {self.pid_path(name)})")
        self.log_path(name).parent.mkdir(parents=True, exist_ok=True)
        self.pid_path(name).parent.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(8)
        full_env = {**os.environ, **(env or {}), TOKEN_ENV: token}
        with self.log_path(name).open("ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                    env=full_env,
                    cwd=cwd,
                )
            except OSError as exc:
                raise ProcessError(f"cannot start {name} ({argv[0]}): {exc}") from exc
        _children[proc.pid] = proc
        start_time = process_start_time(proc.pid)
        if start_time is None:  # cannot happen while we have not reaped it
            raise ProcessError(f"{name} (pid {proc.pid}) vanished right after start; see {self.log_path(name)}")
        record = {"pid": proc.pid, "start_time": start_time, "token": token, "argv": list(argv)}
        tmp = self.pid_path(name).with_suffix(".pid.tmp")
        tmp.write_text(json.dumps(record) + "\n")
        tmp.replace(self.pid_path(name))
        logger.info("started %s (pid %d), log %s", name, proc.pid, self.log_path(name))
        return proc.pid

    def state(self, name: str) -> ProcessStatus:
        """Whether ``name`` is running, crashed (its log's tail in ``detail``) or stopped."""
        rec = self.read_record(name)
        if rec is None:
            return ProcessStatus(name, ProcessState.STOPPED)
        _reap(rec.pid)
        if self._is_ours(rec):
            return ProcessStatus(name, ProcessState.RUNNING, rec.pid)
        now = process_start_time(rec.pid)  # a zombie (exited, never reaped) keeps its start time
        why = "exited" if now in (None, rec.start_time) else "exited (its PID now belongs to another process)"
        log_tail = tail(self.log_path(name))
        detail = f"pid {rec.pid} {why}; log {self.log_path(name)}"
        if log_tail:
            detail += ", last lines:\n" + log_tail
        return ProcessStatus(name, ProcessState.CRASHED, rec.pid, detail)

    def stop(self, name: str, timeout: float = 10.0) -> ProcessStatus:
        """Stop ``name``: SIGTERM to its process group, SIGKILL after ``timeout`` s.

        A leader that is gone leaves its surviving children (found by their
        ownership token) to be stopped the same way; a PID that is no longer ours
        is never signalled. The pid file is removed. Returns the state before.
        """
        before = self.state(name)
        rec = self.read_record(name)
        if rec is None:
            return before
        if before.state is ProcessState.RUNNING:
            # While a member of the group lives, its PGID cannot be recycled, so killpg is safe.
            def members() -> list[int]:
                _reap(rec.pid)
                return _group_members(rec.pid)

            def send(sig: signal.Signals) -> None:
                os.killpg(rec.pid, sig)

        else:
            # The leader is gone: only processes carrying its token are ours. Each is
            # then followed by PID and start time: an exiting process loses its
            # environment (so its token) before it becomes a zombie.
            tracked: dict[int, int] = {}

            def members() -> list[int]:
                for pid in _group_members(rec.pid):
                    start = process_start_time(pid)
                    if pid not in tracked and start is not None and _has_token(pid, rec.token):
                        tracked[pid] = start
                return [pid for pid, start in tracked.items() if _alive_since(pid, start)]

            def send(sig: signal.Signals) -> None:
                for pid in members():
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass

            if members():
                logger.info("%s: leader pid %d is gone, stopping its surviving children", name, rec.pid)
        if members():
            _terminate(name, members, send, timeout)
        _reap(rec.pid)
        self.pid_path(name).unlink(missing_ok=True)
        logger.info("stopped %s (pid %d, was %s)", name, rec.pid, before.state.value)
        return before


def _terminate(
    name: str, members: Callable[[], list[int]], send: Callable[[signal.Signals], None], timeout: float
) -> None:
    """SIGTERM, wait up to ``timeout`` s for ``members()`` to empty, then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            send(sig)
        except ProcessLookupError:
            pass
        if wait_for(lambda: not members(), wait):
            return
        if sig is signal.SIGTERM:
            logger.warning("%s did not stop within %.0f s of SIGTERM, sending SIGKILL", name, timeout)
    raise ProcessError(f"{name}: processes {members()} survived SIGKILL")
