"""The admin API under ``/admin``: read and steer rollouts, register model versions.

Every call needs ``Authorization: Bearer <token>``, the token being read from the environment
variable the config names, and compared in constant time. Without a configured token every call
is refused with a message saying how to enable the API. A refused or invalid call changes nothing.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from canarygate.config import (
    NAME_PATTERN,
    NAME_RULE,
    GatewayConfig,
    RolloutConfig,
    shorten,
    validation_problems,
)
from canarygate.drift import DriftMonitor
from canarygate.drift.sequential import SequentialMonitor
from canarygate.errors import (
    BadRequest,
    ClientClosed,
    ConfigError,
    Conflict,
    Forbidden,
    GatewayError,
    NotFound,
    Unauthorized,
)
from canarygate.feedback import FeedbackBook
from canarygate.http.asgi import ClientGone, JSONResponse, json_body, read_body
from canarygate.replay import ReplayError, load_report, model_digest, replay_allows
from canarygate.rollout.history import History
from canarygate.rollout.manager import RolloutManager
from canarygate.rollout.telemetry import Telemetry
from canarygate.runtime import ModelRegistry
from canarygate.runtime.catalog import VersionCatalog
from canarygate.runtime.files import FolderRules
from canarygate.stats.live import LiveStats

log = logging.getLogger("canarygate.admin")

MAX_LIMIT = 100_000  # decisions one call may ask for (a model keeps its last 1,000 in memory)
Handler = Callable[[Request], Awaitable[Response]]


class AdminAPI:
    def __init__(self, config: GatewayConfig, registry: ModelRegistry, rollouts: RolloutManager,
                 catalog: VersionCatalog, feedback: FeedbackBook, live: LiveStats, *,
                 drift: DriftMonitor | None, detectors: SequentialMonitor | None,
                 history: History | None = None, shared: Telemetry | None = None) -> None:
        self.registry = registry
        self.shared = shared  # the other workers' figures (the Redis backend)
        self.rollouts = rollouts
        self.catalog = catalog
        self.feedback = feedback
        self.live = live
        self.drift_monitor = drift
        self.detectors = detectors
        self.history = history
        self._limit = config.server.max_body_bytes
        self._state_dir = config.state_dir
        self._models_dir = config.models_dir.resolve()
        self._model_files = config.model_files
        self._token_env = config.admin.token_env
        self._tokens = _tokens(config)
        # One registration of a model at a time: the duplicate check and the install happen
        # on either side of a load that awaits, and two loads of one name must not both win.
        self._registering: dict[str, asyncio.Lock] = {}

    def routes(self) -> list[Route]:
        guard, write = self._guarded, self._write
        return [
            Route("/admin/whoami", guard(self.whoami)),
            Route("/admin/rollouts", guard(self.list_rollouts)),
            Route("/admin/rollouts/{model}", guard(self.show)),
            Route("/admin/rollouts/{model}/decisions", guard(self.decisions)),
            Route("/admin/rollouts/{model}/history", guard(self.timeline)),
            Route("/admin/rollouts/{model}/start", write(self.start), methods=["POST"]),
            Route("/admin/rollouts/{model}/weight", write(self.weight), methods=["POST"]),
            Route("/admin/rollouts/{model}/{action:str}", write(self.act), methods=["POST"]),
            Route("/admin/models/{model}/versions", write(self.register), methods=["POST"]),
            Route("/admin/models/{model}/versions", guard(self.versions), methods=["GET"]),
            Route("/admin/drift/{model}", guard(self.drift)),
            Route("/admin/stats/{model}", guard(self.stats)),
        ]

    def _guarded(self, handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            request.state.token = self._authorize(request.headers.get("authorization"))
            return await handler(request)

        return guarded

    def _write(self, handler: Handler) -> Handler:
        """A write: an operator's token only (a viewer's gets 403 and changes nothing)."""
        async def write(request: Request) -> Response:
            token = self._authorize(request.headers.get("authorization"))
            if token.role != "operator":
                raise Forbidden(f"token {token.name!r} is a {token.role}: it may read, not "
                                "change rollouts or versions")
            request.state.token = token
            return await handler(request)

        return write

    def _authorize(self, header: str | None) -> Token:
        if not self._tokens:
            raise Forbidden(f"the admin API is disabled: set the environment variable "
                            f"{self._token_env} to a token (or one of admin.tokens' variables) "
                            "and restart the gateway")
        if header is None or not header.lower().startswith("bearer "):
            raise Unauthorized("the admin API needs an 'Authorization: Bearer <token>' header")
        given = header[7:].strip().encode()
        # Every token is compared, each in constant time, so timing tells nothing of which.
        found = [t for t in self._tokens if hmac.compare_digest(given, t.secret)]
        if not found:
            raise Forbidden("the admin token is wrong")
        return found[0]

    async def whoami(self, request: Request) -> Response:
        token: Token = request.state.token
        return JSONResponse({"name": token.name, "role": token.role,
                             "models": list(self.rollouts.states)})

    # -- reads ------------------------------------------------------------------------------

    async def list_rollouts(self, request: Request) -> Response:
        return JSONResponse({"rollouts": [self._view(name) for name in self.rollouts.states]})

    async def show(self, request: Request) -> Response:
        return JSONResponse(self._view(self._model(request)))

    async def decisions(self, request: Request) -> Response:
        name = self._model(request)
        raw = request.query_params.get("limit", "100")
        # Digits first, then the size (int() refuses more than 4,300 digits with an error).
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 7 and int(raw) <= MAX_LIMIT):
            raise BadRequest(f"limit must be a whole number from 0 to {MAX_LIMIT}, not "
                             f"{raw[:20]!r}{'...' if len(raw) > 20 else ''}")
        records = self.rollouts.persister.decisions(name)[-int(raw):] if int(raw) else []
        return JSONResponse({"model": name, "decisions": records})

    async def timeline(self, request: Request) -> Response:
        """The model's history, one point per controller tick (``?since=`` a time in seconds
        since the epoch: only later points)."""
        name = self._model(request)
        if self.history is None:
            raise NotFound("this gateway keeps no rollout history")
        raw = request.query_params.get("since", "0")
        try:
            since = float(raw)
        except ValueError:
            since = math.nan
        if not math.isfinite(since):
            raise BadRequest(f"since must be a time in seconds since the epoch, not {raw!r}")
        return JSONResponse(self.history.view(name, since))

    async def drift(self, request: Request) -> Response:
        """Drift against the profiles (per variant and column, and the candidate's outputs
        against the baseline's), and the sequential detectors' state per version."""
        name = self._model(request)
        monitor, detectors = self.drift_monitor, self.detectors
        if monitor is None and detectors is None:
            raise NotFound("drift and detectors are disabled in this gateway's config "
                           "(drift.enabled, detectors.enabled)")
        body: dict[str, Any] = {"model": name, "evaluated_at": None, "variants": []}
        report = monitor.reports.get(name) if monitor is not None else None
        if report is not None:
            body.update(report.as_json())
        body["detectors"] = detectors.state(name) if detectors is not None else None
        return JSONResponse(body)

    async def stats(self, request: Request) -> Response:
        """Latency percentiles, QPS and error rates per version and variant, over the last
        minute or ``?seconds=N`` (at most a minute); with the Redis backend, of every worker
        (``workers`` says how many answered; ``merged`` false: Redis away, this one's only)."""
        name = self._model(request)
        live = self.live
        span = live.width * live.slots
        raw = request.query_params.get("seconds", str(span))
        try:
            seconds = float(raw)
        except ValueError:
            seconds = math.nan
        if not 0 < seconds <= span:
            raise BadRequest(f"seconds must be a number in (0, {span:g}], not {raw!r}")
        if self.shared is None:
            return JSONResponse(live.summary(name, perf_counter(), seconds))
        # Every worker's figures: the others' as they shipped them at their last sync.
        wall = time.time()
        others = await asyncio.to_thread(self.shared.others_live, name, wall)
        body = live.summary(name, perf_counter(), seconds, others or [], wall)
        body.update(workers=1 + len(others or []), merged=others is not None)
        return JSONResponse(body)

    async def versions(self, request: Request) -> Response:
        """A model's loaded versions, each with its folder and the part it plays."""
        served = self.registry.get(self._model(request))
        state = self.rollouts.states[served.name]
        roles = {state.baseline: "baseline"}
        if state.candidate is not None and state.active:
            roles[state.candidate] = "candidate"
        root = self._models_dir
        return JSONResponse({"model": served.name, "versions": [
            {"version": v, "role": roles.get(v, ""),
             "path": str(m.folder.relative_to(root)) if m.folder.is_relative_to(root)
             else str(m.folder)}
            for v, m in served.versions.items()]})

    def _view(self, name: str) -> dict[str, Any]:
        served = self.registry.get(name)
        state = self.rollouts.states[name]
        window = self.rollouts.step_stats(name)
        arms = {
            arm: {"requests": stats.requests, "errors": stats.errors,
                  "p50_ms": _ms(stats.latency.quantile(0.5)),
                  "p95_ms": _ms(stats.latency.quantile(0.95)),
                  "labelled": stats.labelled, "wrong": stats.wrong}
            for arm, stats in (("baseline", window.baseline), ("candidate", window.candidate))
        }
        view = state.to_json()
        view.update(
            versions=list(served.versions),
            steps=state.schedule.steps,
            step_counts=arms,
            shadow=vars(window.shadow),
            tau_ms=_ms(state.tau_seconds),
            step_number=state.step + 1 if state.step >= 0 else None,  # "step 2 of 6"
            waiting=self.rollouts.waiting(name),
            last_verdicts=[g.as_json() for g in self.rollouts.last_gates.get(name, [])],
            feedback=self.feedback.summary(name),
            estimated_accuracy=self._estimates(name),
        )
        return view

    def _estimates(self, name: str) -> list[dict[str, Any]]:
        """Each version's accuracy estimated from its scores over the drift window, beside the
        accuracy its labels realised (when feedback came)."""
        report = self.drift_monitor.reports.get(name) if self.drift_monitor else None
        realised = self.feedback.summary(name)
        return [{"version": v.version, "variant": v.variant,
                 **v.estimated_accuracy.as_json(),
                 "realised_accuracy": realised.get(v.version, {}).get("accuracy")}
                for v in (report.variants if report else ()) if v.estimated_accuracy]

    # -- writes -----------------------------------------------------------------------------

    async def start(self, request: Request) -> Response:
        name = self._model(request)
        body = await self._body(request)
        candidate = body.get("candidate")
        if not isinstance(candidate, str | int) or isinstance(candidate, bool):
            raise BadRequest("'candidate' must name a version")
        served = self.registry.get(name)
        schedule_raw = body.get("schedule")
        if schedule_raw is None:
            schedule = served.config.rollout or RolloutConfig()
        elif isinstance(schedule_raw, dict):
            schedule = _schedule(schedule_raw)
        else:
            raise BadRequest("'schedule' must be an object")
        await self._replay_passed(body, name, served.version(str(candidate)).folder,
                                  str(candidate))
        reason, actor = _reason(body), _actor(request)
        await self._apply(name, lambda: self.rollouts.start(name, str(candidate), schedule,
                                                           actor=actor, reason=reason))
        return JSONResponse(self._view(name))

    async def _replay_passed(self, body: dict[str, Any], name: str, folder: Path,
                             candidate: str) -> None:
        """``replay`` (a report of ``canarygate replay``, inline or a file under state_dir)
        must have passed, on this very build of the candidate, before it takes live traffic;
        ``require_replay: true`` makes one compulsory. 400 for a missing or unreadable report,
        409 for one that did not pass."""
        required, source = body.get("require_replay", False), body.get("replay")
        if not isinstance(required, bool):
            raise BadRequest("'require_replay' must be true or false")
        if source is None:
            if required:
                raise BadRequest("require_replay is set but no 'replay' report was given (run "
                                 "canarygate replay DATASET --model M --candidate V --out F)")
            return
        if not isinstance(source, str | dict):
            raise BadRequest("'replay' must be a replay report (an object) or a file name")
        try:
            report = await asyncio.to_thread(load_report, source, self._state_dir)
        except ReplayError as exc:
            raise BadRequest(str(exc)) from None
        try:
            digest = await asyncio.to_thread(model_digest, folder, FolderRules(
                self._models_dir, self._model_files))
        except ConfigError as exc:
            raise BadRequest(str(exc)) from None
        allowed, why = replay_allows(report, name, candidate, digest)
        if not allowed:
            raise Conflict(f"candidate {candidate!r} may not take live traffic: {why}")

    async def weight(self, request: Request) -> Response:
        name = self._model(request)
        body = await self._body(request)
        weight = body.get("weight")
        if not isinstance(weight, int | float) or isinstance(weight, bool):
            raise BadRequest("'weight' must be a number from 0 to 100")
        reason, actor = _reason(body), _actor(request)
        await self._apply(name, lambda: self.rollouts.set_weight(name, float(weight),
                                                                actor=actor, reason=reason))
        return JSONResponse(self._view(name))

    async def act(self, request: Request) -> Response:
        name = self._model(request)
        action = request.path_params["action"]
        body = await self._body(request)
        actions = {"pause": self.rollouts.pause, "resume": self.rollouts.resume,
                   "promote": self.rollouts.promote, "rollback": self.rollouts.rollback}
        if action not in actions:
            raise BadRequest(f"unknown action {action!r}; use one of: " + ", ".join(actions))
        reason, actor = _reason(body), _actor(request)
        await self._apply(name, lambda: actions[action](name, actor=actor, reason=reason))
        return JSONResponse(self._view(name))

    async def register(self, request: Request) -> Response:
        """Load a new version from a folder under the models directory, without a restart.

        The version is written to the state store before it serves, so a rollout naming it
        finds it again after a restart."""
        name = self._model(request)
        served = self.registry.get(name)
        body = await self._body(request)
        version, path = body.get("version"), body.get("path")
        if not isinstance(version, str | int) or isinstance(version, bool) or not str(version):
            raise BadRequest("'version' must be a version name")
        version = str(version)
        if not re.fullmatch(NAME_PATTERN, version):
            raise BadRequest(f"version name {shorten(version)} must be {NAME_RULE} "
                             f"({NAME_PATTERN}; it becomes part of URLs, file names and "
                             "metric labels)")
        if not isinstance(path, str) or not path:
            raise BadRequest("'path' must be a folder under the models directory")
        if "\x00" in path:
            raise BadRequest("'path' must not contain a NUL character")
        reason = _reason(body)
        self.rollouts.require_store()
        async with self._registering.setdefault(name, asyncio.Lock()):
            if version in served.versions:
                raise Conflict(f"model {name!r} already has a version {version!r}")
            try:
                loaded = await asyncio.to_thread(self.catalog.load, served, version, path)
                await asyncio.to_thread(self.catalog.read_profile, served, loaded)
            except ConfigError as exc:
                raise BadRequest(str(exc)) from None
            try:
                await asyncio.to_thread(self.catalog.persist, served, loaded, path)
            except (OSError, ConfigError) as exc:
                log.error("could not persist version %r of %r: %s", version, name, exc)
                raise GatewayError(f"model {name!r} version {version!r} was not registered: "
                                   f"the state store could not record it ({exc})") from None
            self.catalog.install(served, loaded)
        self.rollouts.registered(name, version, path, actor=_actor(request), reason=reason)
        return JSONResponse({**loaded.describe(), "version": version,
                             "versions": list(served.versions)}, status_code=201)

    async def _apply(self, name: str, action: Callable[[], object]) -> None:
        """Act, and answer once the change is stored. With several workers another may have
        changed the rollout just before: this one then follows the store and acts once more
        on what it now holds (which may refuse, as the action would on that state)."""
        for _ in range(2):
            action()
            if await self.rollouts.confirmed(name):
                return
        raise Conflict(f"the rollout of {name!r} kept changing on another worker; look at it "
                       "again and retry")

    def _model(self, request: Request) -> str:
        return self.registry.get(request.path_params["model"]).name

    async def _body(self, request: Request) -> dict[str, Any]:
        """The body as a JSON object ({} when empty), read no further than the body limit."""
        try:
            raw = await read_body(request.receive, dict(request.scope["headers"]), self._limit)
        except ClientGone:
            raise ClientClosed("the client went away before its request was whole") from None
        if not raw:
            return {}
        body = json_body(raw)
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        return body


@dataclass(frozen=True)
class Token:
    name: str  # the actor the decision log records
    role: str  # viewer or operator
    secret: bytes = field(repr=False)


def _tokens(config: GatewayConfig) -> list[Token]:
    """The tokens whose variables are set: ``token_env``'s as the operator ``admin``, then
    ``admin.tokens``."""
    named = [("admin", "operator", config.admin.token_env),
             *((t.name, t.role, t.env) for t in config.admin.tokens)]
    return [Token(name, role, os.environ[env].encode()) for name, role, env in named
            if os.environ.get(env)]


def _actor(request: Request) -> str:
    token: Token = request.state.token
    return token.name


def _reason(body: dict[str, Any]) -> str:
    reason = body.get("reason", "")
    if not isinstance(reason, str):
        raise BadRequest("'reason' must be a string")
    return reason or "no reason given"


def _schedule(raw: dict[str, Any]) -> RolloutConfig:
    try:
        return RolloutConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(validation_problems(exc, raw))
        raise BadRequest(f"invalid schedule: {problems}") from None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 4)

