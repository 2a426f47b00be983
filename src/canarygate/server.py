"""Uvicorn, set up from ``server:``: the transport's limits, TLS, the open-file limit, and an
exit status of 0 after a clean drain on SIGTERM."""

from __future__ import annotations

import contextlib
import logging
import resource
import signal
import ssl
from collections.abc import Generator
from typing import Any

import uvicorn

from canarygate.boot import Boot
from canarygate.config import GatewayConfig, ServerConfig
from canarygate.errors import ConfigError
from canarygate.http.asgi import Front
from canarygate.transport import ErrorHook, Limits, ignore_error, protocol_class

log = logging.getLogger("canarygate")

FILES_BESIDES_CONNECTIONS = 256
"""Descriptors kept for everything but client connections: model files, dataset segments, the
state store, the listening socket, the event loop's own."""


class GatewayServer(uvicorn.Server):
    """Uvicorn's server, except that a SIGTERM whose drain finished exits 0.

    Uvicorn re-raises the signal it caught once it has shut down, so the process dies of it
    (status 143) however cleanly it drained, and service managers read that as a failure.
    """

    drained = False
    """Every request in flight finished within the drain timeout and the app shut down."""
    _finished = False

    async def _wait_tasks_to_complete(self) -> None:
        # Uvicorn runs this under the drain timeout and cancels it when time runs out; the
        # line after it is reached only when every connection and task ended by itself.
        await super()._wait_tasks_to_complete()
        self._finished = True

    async def shutdown(self, sockets: Any = None) -> None:
        await super().shutdown(sockets)
        self.drained = self._finished and not self.force_exit and not getattr(
            self.lifespan, "shutdown_failed", False)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        with super().capture_signals():
            yield
            # Uvicorn re-raises what is left in this list after the block; a clean drain after
            # SIGTERM is a normal end. SIGINT (Ctrl+C) keeps Python's own behaviour.
            if self.drained:
                self._captured_signals = [s for s in self._captured_signals
                                          if s != signal.SIGTERM]


def raise_open_file_limit(wanted: int) -> int:
    """Raise this process's soft limit on open files to ``wanted`` where the hard limit allows
    (an unprivileged process may raise its soft limit up to the hard one); the limit after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)
    return soft


def connection_cap(config: ServerConfig) -> int:
    """``max_connections``, lowered to what the open-file limit can hold after raising it."""
    files = raise_open_file_limit(config.max_connections + FILES_BESIDES_CONNECTIONS)
    room = max(files - FILES_BESIDES_CONNECTIONS, 1)
    if room < config.max_connections:
        log.warning("server.max_connections lowered from %d to %d: the open-file limit is %d",
                    config.max_connections, room, files)
    return min(config.max_connections, room)


def build_server(app: Any, config: ServerConfig, host: str, port: int, log_level: str,
                 on_error: ErrorHook = ignore_error, front: Front | None = None,
                 ) -> GatewayServer:
    """The server for ``app``; ``on_error`` is called with the status of every error answer
    the transport gives by itself (malformed HTTP 400, timeouts 408, headers too large 431,
    too many connections 503, a 500 when the app raised before answering). The transport
    hands the requests ``front`` routes to their endpoint without ASGI (transport.py).

    Raises ConfigError when the TLS files cannot be loaded.
    """
    limits = Limits(max_header_bytes=config.max_header_bytes,
                    header_timeout=config.header_timeout_seconds,
                    body_timeout=config.body_timeout_seconds,
                    idle_timeout=config.idle_timeout_seconds,
                    max_connections=connection_cap(config), on_error=on_error,
                    max_body_bytes=config.max_body_bytes)
    tls = config.tls
    uvicorn_config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, access_log=False, lifespan="on",
        interface="asgi3",
        http=protocol_class(limits, front),
        ws="none",  # the gateway serves no WebSocket; an Upgrade is answered as plain HTTP
        timeout_keep_alive=config.keep_alive_seconds,
        timeout_graceful_shutdown=config.drain_timeout_seconds,  # type: ignore[arg-type]
        ssl_certfile=tls.certfile if tls else None, ssl_keyfile=tls.keyfile if tls else None,
        # Neither is needed by the gateway; each costs every request some work.
        proxy_headers=config.proxy_headers, server_header=False,
    )
    try:
        uvicorn_config.load()  # reads the TLS files now, so a bad one is a config error
    except (OSError, ssl.SSLError) as exc:
        if tls is None:
            raise
        raise ConfigError(f"server.tls: cannot load certificate {tls.certfile} with key "
                          f"{tls.keyfile}: {exc}") from None
    return GatewayServer(uvicorn_config)


def booted_server(config: GatewayConfig, host: str, port: int, log_level: str,
                  listen_first: bool = True) -> tuple[Boot, GatewayServer]:
    """The server and the app it serves: a ``Boot`` that answers ``live`` at once and loads
    the gateway off the event loop (boot.py). A model that cannot be loaded stops the server;
    ``Boot.failed`` then says why."""
    server: GatewayServer | None = None

    def stop() -> None:
        if server is not None:
            server.should_exit = True

    boot = Boot(config, stop, listen_first=listen_first)
    # The transport's own error answers (400, 408, 431, 503) count as any other.
    # The prediction routes are served without ASGI once the gateway is warm (boot.route).
    server = build_server(boot, config.server, host=host, port=port, log_level=log_level,
                          on_error=boot.http_error, front=boot)
    return boot, server
