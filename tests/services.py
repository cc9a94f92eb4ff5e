"""THE fixture module that hands tests their services (broker, Redis, S3).

The session-scoped ``stack`` fixture returns a ``Settings`` that points at a
running broker, Redis and S3 endpoint, with the clicks / DLQ topics and the
bucket created. Where a Docker engine answers it starts testcontainers
(Kafka, Redis, MinIO); otherwise it starts the native processes with the same
``services.stack.native`` code the user runs, on free ports in a pytest tmp run
dir, so tests never touch a stack the user has running on 9092/6379/9000.
Everything is stopped at the end of the session.

``CLICKREC_TEST_SERVICES=native`` or ``=docker`` forces a back-end (default:
``auto``). Tests that use these fixtures are marked ``@pytest.mark.integration``.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import redis

from feature_store.settings import Settings
from services.stack import native
from services.stack.processes import ProcessState, Supervisor, wait_for

logger = logging.getLogger(__name__)


def docker_available(timeout: float = 2.0) -> bool:
    """True when a Docker engine answers a ping within ``timeout`` seconds."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if host.startswith("unix://") and not Path(host.removeprefix("unix://")).exists():
        return False  # no socket, no engine (and no socket leaked by a failed SDK connect)
    try:
        import docker

        client = docker.from_env(timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # no SDK, no daemon behind the socket: both mean "no Docker"
        return False


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 right now."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def native_settings(run_dir: Path, **overrides: object) -> Settings:
    """Settings for a private native stack: free ports, run dir and local stores under ``run_dir``."""
    kafka, redis_port, s3 = free_ports(3)
    values: dict[str, object] = {
        "kafka_bootstrap": f"127.0.0.1:{kafka}",
        "redis_url": f"redis://127.0.0.1:{redis_port}/0",
        "s3_endpoint_url": f"http://127.0.0.1:{s3}",
        "run_dir": run_dir / "run",
        "data_dir": run_dir / "data",
        "artifacts_url": f"file://{run_dir / 'data' / 'artifacts'}",
        "lake_url": f"file://{run_dir / 'data' / 'lake'}",
        "checkpoint_dir": run_dir / "data" / "checkpoints",
        "api_compiled_dir": run_dir / "data" / "api-compiled",
    }
    return Settings(_env_file=None, **{**values, **overrides})


class PrivateRedis:
    """A native Redis of its own on a free port (the stack's declaration of it), for work that
    must not share the test session's Redis: benchmarks, and tests that take Redis away."""

    def __init__(self, run_dir: Path) -> None:
        self.settings = native_settings(run_dir)
        self._service = next(s for s in native.SERVICES if s.name == "redis")
        self._supervisor = Supervisor(Path(self.settings.run_dir))
        self._workdir = Path(self.settings.run_dir) / "redis"  # where the declaration points Redis's --dir

    @property
    def pid(self) -> int:
        return int(self._supervisor.state("redis").pid)

    def start(self, timeout: float = 15.0) -> None:
        """Start Redis (again); it loads what `shutdown_saving` saved."""
        self._workdir.mkdir(parents=True, exist_ok=True)
        self._supervisor.start("redis", self._service.argv(self.settings), cwd=self._workdir)
        if not wait_for(lambda: native.redis_healthy(self.settings), timeout):
            raise RuntimeError(f"redis did not start; see {self._supervisor.log_path('redis')}")

    def shutdown_saving(self, timeout: float = 15.0) -> None:
        """Take Redis away as a restart with persistence does: save the data, then exit."""
        redis.Redis.from_url(self.settings.redis_url).shutdown(save=True)
        if not wait_for(lambda: self._supervisor.state("redis").state is not ProcessState.RUNNING, timeout):
            raise RuntimeError(f"redis did not exit; see {self._supervisor.log_path('redis')}")

    def stop(self) -> None:
        self._supervisor.stop("redis")


@contextmanager
def private_redis(run_dir: Path) -> Iterator[PrivateRedis]:
    """A started `PrivateRedis`, stopped at the end."""
    server = PrivateRedis(run_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def unique_topic_name(hint: str = "t") -> str:
    """A topic name no other test uses: the sanitised hint plus a random suffix."""
    base = re.sub(r"[^a-zA-Z0-9._-]+", "-", hint).strip("-")[:80] or "t"
    return f"test-{base}-{uuid.uuid4().hex[:8]}"


def _docker_stack(run_dir: Path, stack: ExitStack) -> Settings:
    from testcontainers.community.kafka import KafkaContainer
    from testcontainers.community.minio import MinioContainer
    from testcontainers.community.redis import RedisContainer

    defaults = Settings(_env_file=None)
    kafka = stack.enter_context(KafkaContainer())
    redis_c = stack.enter_context(RedisContainer())
    minio = stack.enter_context(MinioContainer(access_key=defaults.s3_access_key, secret_key=defaults.s3_secret_key))
    redis_host = redis_c.get_container_host_ip()
    return native_settings(
        run_dir,
        kafka_bootstrap=kafka.get_bootstrap_server(),
        redis_url=f"redis://{redis_host}:{redis_c.get_exposed_port(6379)}/0",
        s3_endpoint_url=f"http://{minio.get_config()['endpoint']}",
    )


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings pointing at a broker, Redis and S3 endpoint for this test session."""
    mode = os.environ.get("CLICKREC_TEST_SERVICES", "auto").lower()
    use_docker = mode == "docker" or (mode == "auto" and docker_available())
    run_dir = tmp_path_factory.mktemp("stack")
    with ExitStack() as cleanup:
        if use_docker:
            settings = _docker_stack(run_dir, cleanup)
            native.provision(settings)
        else:
            settings = native_settings(run_dir)
            cleanup.callback(native.down, settings)
            native.up(settings)
        logger.info("test services (%s): %s", "docker" if use_docker else f"native, run dir {run_dir}", settings)
        yield settings


@pytest.fixture(scope="session")
def kafka_bootstrap(stack: Settings) -> str:
    """Bootstrap servers of the test broker."""
    return stack.kafka_bootstrap


@pytest.fixture(scope="session")
def redis_url(stack: Settings) -> str:
    """URL of the test Redis."""
    return stack.redis_url


@pytest.fixture(scope="session")
def s3_endpoint(stack: Settings) -> str:
    """URL of the test S3 endpoint (credentials and bucket in ``stack``)."""
    return stack.s3_endpoint_url


@pytest.fixture
def unique_topic(request: pytest.FixtureRequest) -> str:
    """A fresh topic name for this test (not created: use ``producer.topics.ensure_topics``)."""
    return unique_topic_name(request.node.name)
