"""The prediction pipeline shared by both protocols: parse -> route -> run -> respond.

Endpoints are plain ASGI callables (no Starlette Request/Response on this path); each protocol
supplies only how to decode a body and encode an answer.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from random import Random, random
from time import perf_counter, time
from typing import Protocol as TypingProtocol

import numpy as np

from canarygate.errors import BadRequest, GatewayError, ModelFailure
from canarygate.feedback import packed
from canarygate.gateway import Gateway
from canarygate.http.asgi import (
    ClientGone,
    Headers,
    Receive,
    Scope,
    Send,
    error_body,
    read_body,
    send_response,
)
from canarygate.recorder import Record
from canarygate.router import Routing, to_candidate
from canarygate.runtime import ModelVersion, ServedModel, Tensor
from canarygate.runtime.runner import RunResult
from canarygate.stats import StepWindow

log = logging.getLogger("canarygate")

MAX_REQUEST_ID = 256  # a request id becomes a response header: short, printable ASCII
# Request ids: 128 random bits as 32 hex digits, like a UUID4's, from a generator seeded by the
# OS at start. uuid4() reads os.urandom for every id, which cost 6 % of a request's CPU.
_ids = Random()


def new_request_id() -> str:
    return f"{_ids.getrandbits(128):032x}"


def usable_request_id(text: str) -> bool:
    """Whether a client's id (header or V2 body) may stand as the request id."""
    return len(text) <= MAX_REQUEST_ID and text.isascii() and text.isprintable()


MAX_SHADOW_IN_FLIGHT = 64


@dataclass(slots=True)
class Decoded:
    tensors: list[Tensor]
    outputs: list[str] | None  # requested output names; None for all
    body_id: str | None = None  # the request's own id field (V2), if any
    binary_outputs: frozenset[str] = frozenset()


@dataclass(slots=True)
class Encoded:
    body: bytes
    content_type: bytes
    headers: list[tuple[bytes, bytes]]


class Codec(TypingProtocol):
    name: str

    def decode(self, body: bytes, headers: Headers, version: ModelVersion) -> Decoded: ...

    def encode(
        self,
        version: ModelVersion,
        names: tuple[str, ...],
        results: list[np.ndarray],
        decoded: Decoded,
        request_id: str,
    ) -> Encoded: ...


class InferEndpoint:
    """``POST`` prediction endpoint; ``pinned`` endpoints take the version from the path."""

    def __init__(self, gateway: Gateway, codec: Codec, *, pinned: bool) -> None:
        self.gateway = gateway
        self.codec = codec
        self.pinned = pinned
        self._limit = gateway.config.server.max_body_bytes
        self._id_header = gateway.config.server.request_id_header.lower().encode()
        self._sticky_header = gateway.config.server.sticky_header.lower().encode()
        self._shadows = gateway.background

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = perf_counter()
        arrived = time()
        gw = self.gateway
        headers: Headers = dict(scope["headers"])
        params = scope["path_params"]
        model_label = version_label = ""
        variant = "pinned" if self.pinned else "baseline"
        rid = ""
        extra: list[tuple[bytes, bytes]] = []
        routing: Routing | None = None
        key = None
        feeds: dict[str, np.ndarray] | None = None
        outputs: dict[str, np.ndarray] | None = None
        run: RunResult | None = None
        mirrored = False
        error: str | None = None
        try:
            model = gw.registry.get(params["name"])
            model_label = model.name
            rid = _request_id(headers.get(self._id_header))
            window = model.window  # the step this request was routed in, even if it ends
            if self.pinned:
                version = model.version(params["version"])
            else:
                routing = model.routing
                assert routing is not None
                key = headers.get(self._sticky_header)
                version = routing.baseline
                if routing.candidate is not None and to_candidate(routing, key, random()):
                    variant, version = "candidate", routing.candidate
            version_label = version.version
            body = await read_body(receive, headers, self._limit)
            decoded = self.codec.decode(body, headers, version)
            if not rid:
                rid = decoded.body_id or new_request_id()
            feeds = version.feeds(decoded.tensors)
            names = version.select_outputs(decoded.outputs)
            # Every output is computed, whatever the client asked for: feedback, shadow
            # comparisons and the dataset judge the model's label, not the client's choice.
            if routing is None:
                run = await gw.runner.run(version, feeds, version.output_names)
            elif variant == "candidate":
                run, version, failure = await self._run_candidate(model, window, routing, feeds,
                                                                  key, started)
                if failure is not None:
                    variant, version_label = "fallback", version.version
                    extra.append((b"x-canarygate-fallback", failure.encode()))
            else:
                # The baseline's failures count as the candidate's do, or a candidate no
                # worse than the baseline would look worse.
                try:
                    run = await gw.runner.run(version, feeds, version.output_names)
                except ModelFailure:
                    self._record_stats(window, False, started, True, key, None)
                    raise
                failed = (not run.all_finite() or (routing.candidate is not None and
                          run.run_seconds > self._timeout(model)))
                self._record_stats(window, False, started, failed, key, run)
                mirrored = bool(routing.shadow_share and routing.candidate
                                and random() < routing.shadow_share)
            outputs = dict(zip(version.output_names, run.outputs, strict=True))
            if gw.drift is not None:
                gw.drift.observe(model.name, version.version, variant, feeds, outputs)
            label = run.outputs[version.label_index]
            gw.feedback.remember(
                rid, arrived, model.name, version.version, variant, version.classifier,
                packed(label.reshape(label.shape[0], -1)[:, 0] if label.ndim
                       else label.reshape(1)))
            answer = self.codec.encode(version, names, [outputs[n] for n in names], decoded,
                                       rid)
            status, payload, content_type = 200, answer.body, answer.content_type
            extra.extend(answer.headers)
        except ClientGone:
            gw.metrics.request(model_label, version_label, variant, self.codec.name, 499)
            return
        except GatewayError as exc:
            if exc.status >= 500:
                log.error("%s (request %s)", exc.message, rid, exc_info=exc.__cause__)
            status, payload, content_type = exc.status, error_body(exc.message), JSON_TYPE
            extra, error = [], exc.message
        except Exception:
            log.exception("unexpected failure serving request %s", rid)
            status, payload, content_type = 500, error_body("internal error"), JSON_TYPE
            extra, error = [], "internal error"
        rid = rid or new_request_id()
        extra.append((b"x-request-id", rid.encode()))
        if version_label and status == 200:
            extra.append((b"x-model-version", version_label.encode()))
            extra.append((b"x-canarygate-variant", variant.encode()))
        now = perf_counter()
        elapsed = now - started
        gw.metrics.request(model_label, version_label, variant, self.codec.name, status)
        if version_label:
            rows = _rows(feeds)
            gw.live.get(model_label, version_label, variant, now).record(
                now, elapsed, status, rows, run.queue_seconds if run else None,
                run.run_seconds if run else None, run.batch_rows if run else 0)
            if status == 200 and gw.sequential is not None:
                gw.sequential.observe_latency(model_label, version_label, elapsed)
        recorder = gw.recorder
        mirrored = mirrored and outputs is not None and feeds is not None
        if recorder is not None and recorder.sampled():
            record = Record(
                time=arrived, request_id=rid, model=model_label, version=version_label,
                variant=variant, routing=_reason(variant, key), step=routing.step if routing
                else -1, weight=routing.weight if routing else 0.0, protocol=self.codec.name,
                status=status, error=error, inputs=feeds, outputs=outputs,
                queue_ms=run.queue_seconds * 1000 if run else 0.0,
                inference_ms=run.run_seconds * 1000 if run else 0.0, total_ms=elapsed * 1000,
                batch_size=run.batch_rows if run else 0)
            if mirrored and routing is not None and routing.candidate is not None:
                assert feeds is not None and outputs is not None  # mirrored says so
                await self._mirror(model, window, routing.candidate, feeds, outputs, record)
            else:
                await recorder.put_or_wait(record)
        elif mirrored and routing is not None and routing.candidate is not None:
            assert feeds is not None and outputs is not None
            await self._mirror(model, window, routing.candidate, feeds, outputs, None)
        await send_response(send, status, payload, content_type, extra)

    async def _run_candidate(
        self, model: ServedModel, window: StepWindow, routing: Routing,
        feeds: dict[str, np.ndarray], key: bytes | None, started: float,
    ) -> tuple[RunResult, ModelVersion, str | None]:
        """The candidate's answer, or, when it fails or is too slow, the baseline's. The
        candidate's figures are recorded before any fallback, so a failing baseline cannot hide
        them."""
        candidate = routing.candidate
        assert candidate is not None
        runner = self.gateway.runner
        try:
            run = await runner.run(candidate, feeds, candidate.output_names,
                                   self._timeout(model))
            if not run.all_finite():
                raise ModelFailure(f"candidate {candidate.version!r} answered NaN or infinity")
        except (ModelFailure, TimeoutError) as exc:
            kind = "candidate-timeout" if isinstance(exc, TimeoutError) else "candidate-error"
            self.gateway.metrics.candidate_failure(model.name, candidate.version, kind)
            self._record_stats(window, True, started, True, key, None)
            baseline = routing.baseline
            return await runner.run(baseline, feeds, baseline.output_names), baseline, kind
        self._record_stats(window, True, started, False, key, run)
        return run, candidate, None

    def _timeout(self, model: ServedModel) -> float:
        manager = self.gateway.rollouts
        state = manager.states.get(model.name) if manager else None
        return state.schedule.candidate_timeout_ms / 1000 if state else 1.0

    @staticmethod
    def _record_stats(window: StepWindow, candidate: bool, started: float, error: bool,
                      key: bytes | None, run: RunResult | None) -> None:
        arm = window.candidate if candidate else window.baseline
        last = run.outputs[-1] if run is not None and run.outputs else None
        output = (float(last.flat[0]) if last is not None and last.size
                  and last.dtype.kind in "fiub" else None)
        arm.record(perf_counter() - started, error, key is not None, output)

    async def _mirror(self, model: ServedModel, window: StepWindow, candidate: ModelVersion,
                      feeds: dict[str, np.ndarray], baseline: dict[str, np.ndarray],
                      record: Record | None) -> None:
        """Run the candidate on the same inputs after the answer is on its way; the request's
        record is queued when the shadow output is there to join it."""
        recorder = self.gateway.recorder
        if len(self._shadows) >= MAX_SHADOW_IN_FLIGHT:
            window.shadow.dropped += 1
            self.gateway.metrics.shadow(model.name, "dropped")
            if record is not None and recorder is not None:
                await recorder.put_or_wait(record)
            return
        task = asyncio.get_running_loop().create_task(
            self._shadow(model, window, candidate, feeds, baseline, record))
        self._shadows.add(task)
        task.add_done_callback(self._shadows.discard)

    async def _shadow(self, model: ServedModel, window: StepWindow, candidate: ModelVersion,
                      feeds: dict[str, np.ndarray], baseline: dict[str, np.ndarray],
                      record: Record | None) -> None:
        started = perf_counter()
        error: str | None = None
        run: RunResult | None = None
        try:
            run = await self.gateway.runner.run(candidate, feeds, candidate.output_names,
                                                self._timeout(model))
            if not run.all_finite():
                error = "non-finite output"
        except (ModelFailure, TimeoutError) as exc:
            error = str(exc)
        self.gateway.metrics.shadow(model.name, "failed" if error else "ok")
        if error or run is None:
            window.candidate.record(perf_counter() - started, True, False, None)
        else:
            self._record_stats(window, True, started, False, None, run)
            _compare(window, baseline[candidate.output_names[candidate.label_index]],
                     run.outputs[candidate.label_index])
            drift = self.gateway.drift
            if drift is not None:  # the shadow phase's candidate outputs, for output drift
                drift.observe(model.name, candidate.version, "candidate", feeds,
                              dict(zip(candidate.output_names, run.outputs, strict=True)))
        recorder = self.gateway.recorder
        if record is not None and recorder is not None:
            record.shadow_version = candidate.version
            record.shadow_error = error
            record.shadow_outputs = (dict(zip(candidate.output_names, run.outputs, strict=True))
                                     if run is not None and not error else None)
            await recorder.put_or_wait(record)


def _reason(variant: str, key: bytes | None) -> str:
    if variant in ("pinned", "fallback"):
        return variant
    return "sticky" if key is not None else "weight"


def _compare(window: StepWindow, base: np.ndarray, cand: np.ndarray) -> None:
    shadow = window.shadow
    rows = base.shape[0] if base.ndim else 1
    shadow.pairs += rows
    if base.size != cand.size:  # a different output shape agrees with nothing
        shadow.labelled = shadow.labelled or base.dtype.kind in "iub"
        return
    base, cand = base.reshape(rows, -1), cand.reshape(rows, -1)
    if base.dtype.kind in "iub":
        shadow.labelled = True
        shadow.agreements += int(np.count_nonzero((base == cand).all(axis=1)))
        return
    diff = np.abs(cand.astype(np.float64) - base)
    shadow.abs_diff_sum += float(diff.sum())
    shadow.rel_diff_sum += float((diff / np.maximum(np.abs(base), 1e-12)).sum())


def _rows(feeds: dict[str, np.ndarray] | None) -> int:
    first = next(iter(feeds.values()), None) if feeds else None
    return 0 if first is None else first.shape[0] if first.ndim else 1


JSON_TYPE = b"application/json"


def _request_id(raw: bytes | None) -> str:
    if raw is None:
        return ""
    text = raw.decode("latin-1")
    if not text.strip() or not usable_request_id(text):
        raise BadRequest(f"request id header must be 1 to {MAX_REQUEST_ID} printable ASCII "
                         "characters")
    return text
