"""How `clickrec api` serves: uvicorn, and with several workers one listening socket per worker.

uvicorn's own multi-worker mode hands every worker the same listening socket.
asyncio accepts up to a backlog of connections per wake-up, so the first worker
to wake takes a whole burst of new connections; clients keep their connections
alive, and one worker ends up serving most of the traffic while the other idles
(measured in bench/api_latency.py: two workers answered 198 req/s at 16
connections, fewer than one worker). Here each worker binds a socket of its own
to the address with SO_REUSEPORT, and Linux spreads new connections across the
workers' sockets.

uvicorn's supervisor still spawns, health-checks and restarts the workers. It
passes each worker the socket it was given; that socket (`_PerWorkerSocket`)
only reserves the address in the supervisor, never listening, and crosses to
a worker as a new socket of the worker's own on the same address.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from feature_store.settings import Settings

log = logging.getLogger(__name__)

APP = "services.api.app:create_app"


def reuse_port_socket(family: int, address: tuple[str, int]) -> socket.socket:
    """A TCP socket bound to `address` that other SO_REUSEPORT sockets of this user may share."""
    sock = _PerWorkerSocket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    return sock


class _PerWorkerSocket(socket.socket):
    """A socket that, sent to a worker process, arrives as a new socket bound to the same address."""

    def __reduce_ex__(self, protocol: Any) -> tuple:
        return reuse_port_socket, (int(self.family), self.getsockname()[:2])


def serve(settings: Settings, host: str, port: int) -> None:
    """Run the API on host:port with `settings.api_workers` processes until Ctrl-C or SIGTERM."""
    options: dict[str, Any] = dict(factory=True, host=host, port=port, workers=settings.api_workers,
                                   log_level=settings.log_level.lower())  # fmt: skip
    if settings.api_workers == 1 or not hasattr(socket, "SO_REUSEPORT"):  # nothing to spread, or not Linux
        uvicorn.run(APP, **options)
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        reserved = reuse_port_socket(family, (host, port))
    except OSError as error:
        raise SystemExit(f"cannot listen on {host}:{port}: {error} (is another API running? set API_PORT)") from None
    config = uvicorn.Config(APP, **options)
    log.info("serving on http://%s:%d with %d workers, one SO_REUSEPORT socket each", host, port, settings.api_workers)
    Multiprocess(config, sockets=[reserved]).run()
