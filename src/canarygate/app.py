"""The composition root: ``create_app(config)`` builds every part, wires each to what it uses,
lists the whole route table and fixes the order of start and stop."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import secrets
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope

from canarygate.admin.api import AdminAPI
from canarygate.analysis import Analysis
from canarygate.background import set_background_nice
from canarygate.config import GatewayConfig
from canarygate.dashboard import Dashboard
from canarygate.drift import DriftMonitor
from canarygate.drift.sequential import SequentialMonitor
from canarygate.errors import ConfigError, GatewayError
from canarygate.feedback import FeedbackBook
from canarygate.http.asgi import JSON, error_answer, error_json
from canarygate.http.dispatch import PredictionDispatch
from canarygate.http.feedback import FeedbackEndpoint
from canarygate.http.infer import InferEndpoint
from canarygate.http.meta import MetaEndpoints
from canarygate.http.v1 import V1Codec
from canarygate.http.v2 import V2Codec
from canarygate.metrics import Metrics
from canarygate.notify import Notifier
from canarygate.openapi import ApiDocs
from canarygate.recorder import Recorder
from canarygate.recorder.writer import Writer
from canarygate.rollout.cluster import Cluster
from canarygate.rollout.history import History
from canarygate.rollout.manager import RolloutManager
from canarygate.rollout.persist import Persister, StateWriter
from canarygate.rollout.redis_store import RedisStore
from canarygate.rollout.store import FileStateStore, StateStore
from canarygate.rollout.telemetry import Telemetry
from canarygate.router import RoutingTable
from canarygate.runtime import ModelRegistry
from canarygate.runtime.catalog import VersionCatalog
from canarygate.runtime.runner import Runner
from canarygate.runtime.tensors import TensorSpec
from canarygate.serving import Observer, ServingPlane
from canarygate.serving.shadow import Shadow
from canarygate.stats.live import LiveStats
from canarygate.stats.step import StepStats
from canarygate.workers import GROUP_DIR_ENV

LAG_PERIOD = 0.01  # seconds between two looks at the event loop's lag
log = logging.getLogger("canarygate")
GC_THRESHOLD = 50_000
PUBLISH_SECONDS = 1.0


class ModelRoute(Route):
    """A route whose ``{name}`` is a model name, which never holds ``:``.

    Starlette's path parameters match any text between slashes, so ``/v1/models/{name}`` would
    also take ``/v1/models/m:predict`` and answer a GET there with "unknown model 'm:predict'"
    (404) where the prediction route's 405 is the truth.
    """

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE and ":" in child["path_params"].get("name", ""):
            return Match.NONE, {}
        return match, child


@dataclass
class Parts:
    """What a running gateway is made of, each part built once by ``build``; only the
    composition root holds them all (each endpoint is handed the parts it uses)."""

    config: GatewayConfig
    registry: ModelRegistry
    runner: Runner
    metrics: Metrics
    table: RoutingTable
    live: LiveStats
    feedback: FeedbackBook
    drift: DriftMonitor | None
    detectors: SequentialMonitor | None
    recorder: Recorder | None
    writer: Writer | None
    shadow: Shadow
    observer: Observer
    plane: ServingPlane
    analysis: Analysis
    persister: StateWriter
    catalog: VersionCatalog
    rollouts: RolloutManager
    cluster: Cluster | None  # the link to the other workers, with the Redis store
    history: History
    notifier: Notifier
    ready: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)  # controllers, analysis


def build(config: GatewayConfig) -> Parts:
    """Every part, wired; models loaded and rollout state restored (ConfigError before
    anything starts when the config or a model folder cannot be served)."""
    registry = ModelRegistry.load(config)
    set_background_nice(config.server.background_nice)  # before any background thread starts
    group = os.environ.get(GROUP_DIR_ENV)  # set by the parent of a --workers group
    runner, metrics, table, live = (Runner(config.server.inference_threads),
                                    Metrics(Path(group) if group else None), RoutingTable(),
                                    LiveStats())
    feedback = FeedbackBook(config.feedback.max_entries, config.feedback.ttl_seconds)
    feedback.reserve()
    drift = DriftMonitor(config.drift) if config.drift.enabled else None
    if drift is not None:
        for served in registry.models.values():
            for version in served.versions.values():
                drift.add_profile(served.name, version.version, version.folder, version.rules)
    detectors = SequentialMonitor(config.detectors) if config.detectors.enabled else None
    recorder = Recorder(config.dataset) if config.dataset.enabled else None
    writer = Writer(recorder, config.dataset) if recorder is not None else None
    shadow = Shadow(runner, metrics, recorder, drift)
    store, persister, cluster = state_store(config, list(registry.models))
    if cluster is not None:  # drift, detectors and the last minute judged on everyone's
        cluster.telemetry = Telemetry(cluster.store, cluster.worker, config.state.sync_seconds,
                                      list(registry.models), live, drift, detectors)
    observer = Observer(metrics, live, feedback, table, recorder=recorder, drift=drift,
                        detectors=detectors, shadow=shadow, shared=cluster)
    analysis = Analysis(config.drift, registry, live, drift, detectors)
    catalog = VersionCatalog(config, registry, store, drift)
    rollouts = RolloutManager(registry, table, persister, metrics, analysis, shared=cluster)
    notifier = Notifier(config.notifications, metrics)
    rollouts.decision_hooks.append(notifier.decision)  # before restore: the config's start too
    if drift is not None:
        rollouts.tick_hooks.append(lambda name: notifier.drift(drift.reports.get(name)))
    rollouts.restore(store.load(), catalog)
    history = History(rollouts, live, feedback, drift)
    rollouts.tick_hooks.append(history.sample)
    if cluster is not None:
        metrics.watch_cluster(cluster)
    metrics.watch_runner(runner)
    metrics.watch_latency(live)
    metrics.watch_feedback(feedback)
    if drift is not None:
        metrics.watch_drift(drift)
    if detectors is not None:
        metrics.watch_detectors(detectors)
    if recorder is not None:
        metrics.watch_recorder(recorder)
    return Parts(config, registry, runner, metrics, table, live, feedback, drift, detectors,
                 recorder, writer, shadow, observer, ServingPlane(registry, table, runner),
                 analysis, persister, catalog, rollouts, cluster,
                 history, notifier)


def scratch_endpoint(gw: Parts) -> tuple[InferEndpoint, Callable[[], Awaitable[None]]]:
    """The routed V2 endpoint over throwaway parts, for warming the request path's code before
    ready (``boot.warm_path``). It shares the loaded versions and each model's routing, but
    has its own step counters, metrics, live statistics, feedback index, dataset queue (never
    written) and runner, so nothing it answers is counted, recorded, judged or batched with
    real requests. Drift is left out: its profiles are the gateway's own. Await the second
    value when done: it closes the runner."""
    table = RoutingTable()
    for name in gw.registry.models:
        table.set(name, replace(gw.table.get(name), step_stats=StepStats.fresh()))
    runner, metrics = Runner(1), Metrics()
    recorder = Recorder(gw.config.dataset) if gw.recorder is not None else None
    detectors = SequentialMonitor(gw.config.detectors) if gw.detectors is not None else None
    feedback = FeedbackBook(1024, gw.config.feedback.ttl_seconds)
    shadow = Shadow(runner, metrics, recorder, None)
    observer = Observer(metrics, LiveStats(), feedback, table, recorder=recorder,
                        detectors=detectors, shadow=shadow)
    plane = ServingPlane(gw.registry, table, runner)

    async def close() -> None:
        # Mirrored runs still in flight finish on the runner first.
        await asyncio.gather(*shadow.tasks, return_exceptions=True)
        runner.close()

    return InferEndpoint(plane, observer, V2Codec(), gw.config.server, pinned=False), close


def state_store(config: GatewayConfig, models: list[str]
                ) -> tuple[StateStore, StateWriter, Cluster | None]:
    """The file store for one process; Redis (and this worker's link to it) for several."""
    if config.state.backend == "file":
        store = FileStateStore(config.state_dir / "rollouts.json")
        persister = Persister(store, config.state_dir / "decisions.jsonl")
        persister.load_decisions()
        return store, persister, None
    url = os.environ.get(config.state.url_env, "")
    if not url:
        raise ConfigError(f"state.backend is redis: set the environment variable "
                          f"{config.state.url_env} to the Redis URL (redis://host:6379/0)")
    redis_store = RedisStore.connect(url, config.state.prefix, config.state.timeout_seconds)
    worker = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
    cluster = Cluster(redis_store, config.state, worker, config.feedback)
    cluster.load_decisions(models)
    return redis_store, cluster, cluster


async def start(gw: Parts) -> None:
    """Inside the running loop: the writer, one controller per model, the analysis loop."""
    loop = asyncio.get_running_loop()
    if gw.recorder is not None and gw.writer is not None:
        gw.recorder.bind(loop)
        gw.writer.start()
    gw.notifier.start()
    gw.tasks = [loop.create_task(gw.rollouts.run(name)) for name in gw.registry.models]
    if gw.cluster is not None:
        gw.tasks.append(loop.create_task(gw.cluster.run(gw.rollouts, gw.catalog)))
    gw.tasks.append(loop.create_task(gw.analysis.run()))
    gw.tasks.append(loop.create_task(watch_loop(gw.metrics)))
    if gw.metrics.group is not None:
        gw.tasks.append(loop.create_task(publish_metrics(gw.metrics)))
    gw.ready = True


async def watch_loop(metrics: Metrics) -> None:
    """The event loop's lag: a timer every 10 ms, and how late it fired (one timer and one
    histogram insert a turn: nothing the request path pays for)."""
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(LAG_PERIOD)
        metrics.loop_lag(max(loop.time() - before - LAG_PERIOD, 0.0))


async def publish_metrics(metrics: Metrics) -> None:
    """A --workers group's /metrics adds up what each worker wrote in the last second."""
    while True:
        try:
            await asyncio.to_thread(metrics.publish, metrics.render())
        except OSError:
            log.exception("could not write this worker's metrics for its group")
        await asyncio.sleep(PUBLISH_SECONDS)


async def stop(gw: Parts) -> None:
    """After the server stopped taking requests: finish shadow runs, write every record."""
    gw.ready = False
    for task in gw.tasks:
        task.cancel()
    await asyncio.gather(*gw.tasks, return_exceptions=True)
    gw.analysis.close()
    await gw.shadow.drain()
    if gw.writer is not None:
        await asyncio.to_thread(gw.writer.stop)
    gw.persister.flush()
    gw.persister.close()
    await asyncio.to_thread(gw.notifier.stop)
    gw.runner.close()


def baseline_inputs(gw: Parts) -> dict[str, tuple[TensorSpec, ...]]:
    """Each model's baseline inputs: the OpenAPI document's examples are made of them."""
    return {name: gw.plane.baseline(name).inputs for name in gw.registry.models}


def _error_handler(metrics: Metrics) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def error(request: Request, exc: Exception) -> Response:
        """Every error outside the prediction endpoints, rendered as they render theirs."""
        if isinstance(exc, HTTPException):
            message = {404: f"no route for {request.url.path}",
                       405: f"method {request.method} is not allowed on {request.url.path}"}
            status, text = exc.status_code, message.get(exc.status_code, str(exc.detail))
            body, headers = error_json(text), exc.headers
        else:  # Starlette logs what it re-raises after this answer: no second traceback
            status, body, _ = error_answer(exc, log_unexpected=False)
            headers = None
        metrics.http_error(status)
        return Response(body, status_code=status, headers=headers, media_type=JSON.decode())

    return error


def _lifespan(gw: Parts) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await start(gw)
        if gw.config.server.tune_gc:  # see ServerConfig.tune_gc
            gc.collect()
            gc.freeze()
            gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
        sys.setswitchinterval(gw.config.server.switch_interval_ms / 1000)
        log.info("canarygate serving %s", ", ".join(gw.registry.models))
        try:
            yield
        finally:
            await stop(gw)

    return lifespan


def create_app(config: GatewayConfig) -> PredictionDispatch:
    gw = build(config)
    meta = MetaEndpoints(gw.plane, gw.metrics, lambda: gw.ready)
    v2, v1 = V2Codec(), V1Codec({m.name: m.v1_outputs for m in config.models})
    routed = InferEndpoint(gw.plane, gw.observer, v2, config.server, pinned=False)
    pinned = InferEndpoint(gw.plane, gw.observer, v2, config.server, pinned=True)
    predict = InferEndpoint(gw.plane, gw.observer, v1, config.server, pinned=False)
    admin = AdminAPI(config, gw.registry, gw.rollouts, gw.catalog, gw.feedback, gw.live,
                     drift=gw.drift, detectors=gw.detectors, history=gw.history,
                     shared=gw.cluster.telemetry if gw.cluster is not None else None)
    routes = [
        Route("/v2/health/live", meta.live),
        Route("/v2/health/ready", meta.ready),
        Route("/v2", meta.server),
        Route("/v2/models/{name}", meta.model),
        Route("/v2/models/{name}/ready", meta.model_ready),
        Route("/v2/models/{name}/versions/{version}", meta.version),
        Route("/v2/models/{name}/versions/{version}/ready", meta.model_ready),
        Route("/v2/models/{name}/infer", routed, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", pinned, methods=["POST"]),
        Route("/v2/models/{name}/feedback",
              FeedbackEndpoint(gw.plane, gw.observer, config.server).handle, methods=["POST"]),
        Route("/v1/models/{name}:predict", predict, methods=["POST"]),
        ModelRoute("/v1/models/{name}", meta.v1_model),
        Route("/metrics", meta.metrics_text),
        *admin.routes(),
        *Dashboard().routes(),
        *ApiDocs(config, baseline_inputs(gw)).routes(),  # /openapi.json, /docs: built once
    ]

    app = Starlette(routes=routes, lifespan=_lifespan(gw), exception_handlers=dict.fromkeys(
        (HTTPException, GatewayError, Exception), _error_handler(gw.metrics)))
    app.state.gateway = gw
    # POSTs to the prediction routes skip Starlette's middleware and router (http/dispatch.py).
    return PredictionDispatch(app, routed, pinned, predict)
