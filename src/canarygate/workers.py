"""``canarygate serve --workers N``: N processes on one port, each a whole gateway.

The parent binds the socket and starts the workers (spawned, not forked: each loads its own
models and threads); the kernel spreads connections over them. The parent only watches: a
worker that dies is started again, and SIGTERM or SIGINT is passed on to every worker, each of
which drains its requests and writes its records before it exits. The group exits 0 when every
worker drained cleanly.

The workers share the rollout through Redis (several workers need ``state.backend: redis``),
and ``/metrics`` on any of them answers for the whole group: each writes its own figures to a
folder the parent made, and a scrape adds up every worker's (``metrics.merge_expositions``).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from multiprocessing.process import BaseProcess
from types import FrameType

from canarygate.config import GatewayConfig

log = logging.getLogger("canarygate")

GROUP_DIR_ENV = "CANARYGATE_METRICS_DIR"
RESTART_PAUSE = 1.0  # seconds between a worker's death and its replacement
QUICK_DEATH = 15.0  # a worker that dies this soon after its start did not start at all
MAX_QUICK_DEATHS = 3  # in a row: the group gives up (a config or a model it cannot load)


def refuse_reason(config: GatewayConfig, workers: int) -> str | None:
    """Why ``workers`` processes cannot serve ``config``, or None."""
    if workers > 1 and config.state.backend != "redis":
        return (f"--workers {workers} needs a shared state store: set state.backend to redis "
                f"in the config and the Redis URL in ${config.state.url_env} (with the file "
                "store each worker would run its own rollout)")
    if config.state.backend == "redis" and not os.environ.get(config.state.url_env):
        return (f"state.backend is redis: set the environment variable "
                f"{config.state.url_env} to the Redis URL (redis://host:6379/0)")
    return None


def serve_group(args: argparse.Namespace, config: GatewayConfig, workers: int) -> int:
    host = args.host or config.server.host
    port = args.port if args.port is not None else config.server.port
    sock = socket.create_server((host, port), backlog=2048, reuse_port=False)
    sock.set_inheritable(True)
    group = tempfile.mkdtemp(prefix="canarygate-metrics-")
    os.environ[GROUP_DIR_ENV] = group
    context = multiprocessing.get_context("spawn")
    procs: list[BaseProcess] = []
    started: list[float] = []
    stopping = False
    quick_deaths = 0

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signum)

    def start() -> BaseProcess:
        proc = context.Process(target=_worker, args=(args, sock), name="canarygate-worker")
        proc.start()
        started.append(time.monotonic())
        return proc

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        procs.extend(start() for _ in range(workers))
        log.info("canarygate: %d workers on %s:%d", workers, host, port)
        while not stopping and quick_deaths < MAX_QUICK_DEATHS:
            time.sleep(0.2)
            for i, proc in enumerate(procs):
                if proc.is_alive() or stopping:
                    continue
                quick = time.monotonic() - started[i] < QUICK_DEATH
                quick_deaths = quick_deaths + 1 if quick else 0
                if quick_deaths >= MAX_QUICK_DEATHS:
                    log.error("workers keep dying at start (see above); stopping the group")
                    stop(signal.SIGTERM, None)
                    break
                log.error("worker %s exited with %s; starting another", proc.pid,
                          proc.exitcode)
                time.sleep(RESTART_PAUSE)
                procs[i] = start()
                started[i] = started.pop()
        for proc in procs:
            proc.join()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        sock.close()
        shutil.rmtree(group, ignore_errors=True)
    if quick_deaths >= MAX_QUICK_DEATHS:
        return 2
    return 0 if all(p.exitcode == 0 for p in procs) else 1


def _worker(args: argparse.Namespace, sock: socket.socket) -> None:
    """One worker process: its own gateway on the group's socket."""
    from canarygate.config import load_config
    from canarygate.server import booted_server

    logging.basicConfig(level=args.log_level.upper(),
                        format=f"%(levelname)s %(name)s [{os.getpid()}]: %(message)s")
    config = load_config(args.config)
    boot, server = booted_server(config, "", 0, args.log_level, listen_first=False)
    server.run(sockets=[sock])
    if boot.failed is not None:
        print(f"canarygate: {boot.failed}", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(0 if server.drained else 1)
