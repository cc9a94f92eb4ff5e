"""`clickrec api` with several workers: each worker listens on its own socket, so connections spread."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.api_data import dead_url
from tests.services import free_ports

pytestmark = pytest.mark.integration

CLICKREC = Path(sys.executable).parent / "clickrec"
CONNECTIONS = 32


def _listeners(port: int) -> set[int]:
    """Pids of the processes listening on `port` (from /proc: no tool needed)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # 0A: LISTEN
                inodes.add(fields[9])
    pids = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if any(os.readlink(fd).removeprefix("socket:[").rstrip("]") in inodes for fd in (proc / "fd").iterdir()):
                    pids.add(int(proc.name))
            except OSError:
                continue
    return pids


def test_two_workers_share_the_port_and_its_connections(tmp_path: Path) -> None:
    port, dead_port = free_ports(2)
    env = {**os.environ, "API_WORKERS": "2", "REDIS_URL": dead_url(), "KAFKA_BOOTSTRAP": f"127.0.0.1:{dead_port}",
           "ARTIFACTS_URL": f"file://{tmp_path / 'artifacts'}", "LAKE_URL": f"file://{tmp_path / 'lake'}",
           "API_FACTOR_DIR": str(tmp_path / "factors"), "LOG_LEVEL": "WARNING"}  # fmt: skip
    log = (tmp_path / "api.log").open("wb")
    api = subprocess.Popen([str(CLICKREC), "api", "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=log,
                           stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while len(_listeners(port)) < 2:  # every worker has bound its socket
            assert api.poll() is None, (tmp_path / "api.log").read_text()
            assert time.monotonic() < deadline, "the workers did not listen in time"
            time.sleep(0.1)
        listeners = _listeners(port)
        assert api.pid not in listeners  # the supervisor only reserves the address

        # keep-alive clients that all connect at once, like a load generator's connection pool
        connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(CONNECTIONS)]
        for connection in connections:
            connection.connect()
        answered_by = Counter()
        for connection in connections:
            for _ in range(2):  # the same connection stays with its worker
                connection.request("GET", "/health")
                response = connection.getresponse()
                assert response.status == 200
                answered_by[json.loads(response.read())["pid"]] += 1
            connection.close()
        assert set(answered_by) == listeners, answered_by
        # the kernel hashes connections over the sockets: fewer than 6 of 32 on one side has odds of 1 in 10,000
        assert min(answered_by.values()) >= 2 * 6, answered_by
    finally:
        os.killpg(api.pid, signal.SIGTERM)
        assert api.wait(30) == 0
        log.close()
    assert not _listeners(port)
