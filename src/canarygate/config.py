"""The gateway's configuration: one YAML file, validated once at start, then frozen.

Config is what was asked for; what the gateway decides at run time (the rollout state) lives
elsewhere. A wrong file fails at start with a message naming the key and the problem.
"""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from canarygate.errors import ConfigError

DAY = 86_400.0
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
NAME_RULE = ("1 to 64 characters: letters, digits, '_', '.' and '-', starting with a letter or "
             "a digit")
"""Model, version and token names (the V2 protocol's and KServe's rules in spirit): they become
parts of URLs, file names, metric labels and log lines."""
MiB = 1024 * 1024
GiB = 1024 * MiB


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


class TlsConfig(_Frozen):
    """HTTPS on the gateway's own port, for when no proxy in front terminates TLS."""

    certfile: Path
    """PEM certificate chain; relative paths are taken from the config file's folder."""
    keyfile: Path
    """PEM private key (unencrypted) for ``certfile``."""


class ServerConfig(_Frozen):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    """Largest request body accepted (after decompression); larger ones get 413."""
    max_batch_size: int = Field(default=1024, gt=0)
    """Default largest batch (rows) one request may carry; a model may set its own."""
    inference_threads: int = Field(default_factory=lambda: os.cpu_count() or 1, gt=0)
    """Threads that run models off the event loop."""
    intra_op_threads: int = Field(default=1, gt=0)
    """onnxruntime threads inside one run; 1 avoids oversubscribing a small machine."""
    proxy_headers: bool = False
    """Take the client's address and scheme from X-Forwarded-For / X-Forwarded-Proto (behind
    a proxy you trust). Off: the gateway does not use them, and Uvicorn's middleware for them
    wraps every request."""
    tune_gc: bool = True
    """After start, move everything loaded so far out of the garbage collector's sight
    (``gc.freeze``) and collect the youngest generation every 50,000 net allocations instead
    of 700. Requests make few reference cycles, but the default thresholds ran full
    collections every few seconds under load, each holding the event loop for tens of ms
    (the p99 went from ~200 to ~40 ms at 32 connections in a profile on this machine)."""
    switch_interval_ms: float = Field(default=1.0, gt=0, le=100)
    """CPython's GIL switch interval in this process: how long a background thread busy in
    Python (drift, the dataset writer) may keep the event loop waiting for the interpreter.
    CPython's own default is 5 ms; 1 ms took the p99 at 1,200 requests a second on one core
    from about 8.5 to 5.8 ms (open loop, everything on, 2026-12-01)."""
    background_nice: int = Field(default=19, ge=0, le=19)
    """The nice value (Linux) of the background threads: the analysis thread, the dataset
    writer and its Parquet converter. At 19 the scheduler runs the event loop first and they
    fill the time it leaves idle (open-loop p99 on one core about halved, 2026-12-01). They
    then also yield to every other process on the machine. When the dataset writer trails (a
    saturated core, a node kept busy by others), a second thread at nice 10 (or this value,
    if lower) drains the queue for it (``recorder/writer.py``); watch
    ``canarygate_dataset_writer_lag_seconds``. 0 keeps the loop's own priority for both."""
    request_id_header: str = "x-request-id"
    sticky_header: str = "x-user-id"
    """A request carrying this header is routed by a hash of its value: the same key always
    gets the same variant at a given weight, and keeps the candidate as the weight rises."""
    # Transport limits (server.py, transport.py). The defaults are for a gateway an untrusted
    # network can reach: a client gets a few seconds for each part of a request, and no client
    # can hold more than its share of file descriptors or memory.
    max_header_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)
    """Largest request line plus headers; beyond it 431 and the connection is closed."""
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=3600)
    """A request's line and headers must arrive within this (in total, not between reads,
    so sending a byte at a time does not help); else 408."""
    body_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    """A request's body must arrive within this after its headers; else 408."""
    idle_timeout_seconds: float = Field(default=10.0, gt=0, le=3600)
    """A new connection that sends nothing for this long is closed."""
    keep_alive_seconds: int = Field(default=5, ge=1, le=3600)
    """An idle connection between requests is closed after this."""
    max_connections: int = Field(default=4096, ge=1, le=1_000_000)
    """Open connections at most; one more gets 503 and is closed. The open-file limit is
    raised at start to fit (up to the hard limit; below it, this cap shrinks, with a warning)."""
    drain_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    """On SIGTERM, requests in flight get this long to finish; exit 0 when all did."""
    tls: TlsConfig | None = None
    warmup_rows: int = Field(default=8, ge=0, le=4096)
    """At start, each version runs batches of this many zero-filled rows before the gateway
    calls itself ready (0: no warm-up). The server answers ``/v2/health/live`` meanwhile."""
    warmup_runs: int = Field(default=4, ge=0, le=100)
    """Warm-up batches per version: enough for a batcher to learn what a run costs."""
    warmup_requests: int = Field(default=32, ge=0, le=10_000)
    """Then, before ready, each model's routed V2 endpoint answers this many one-row requests
    in-process on throwaway telemetry (its own counters, statistics and runner: nothing of
    them is counted, recorded or judged), so that the interpreter has specialised the request
    path's code before the first real request (0: none)."""


class TokenConfig(_Frozen):
    """A named admin token: its name is the actor the decision log records."""

    name: str = Field(pattern=NAME_PATTERN)
    role: Literal["viewer", "operator"]
    """viewer: reads only (writes get 403); operator: reads and steers rollouts."""
    env: str
    """Environment variable holding the token (never the token itself)."""


class AdminConfig(_Frozen):
    token_env: str = "CANARYGATE_ADMIN_TOKEN"
    """Environment variable holding the admin API's bearer token (never the token itself): an
    operator named ``admin``."""
    tokens: list[TokenConfig] = []
    """More tokens, each named, with a role."""

    @field_validator("tokens")
    @classmethod
    def _unique_tokens(cls, tokens: list[TokenConfig]) -> list[TokenConfig]:
        names = [t.name for t in tokens]
        if "admin" in names or len(set(names)) < len(names):
            raise ValueError("token names must be unique and not 'admin' (token_env's name)")
        return tokens


class RedactConfig(_Frozen):
    drop: list[str] = []
    """Input names whose data is left out of every record."""
    hash: list[str] = []
    """Input names recorded as a SHA-256 digest of their bytes (joinable, not readable)."""


class DatasetConfig(_Frozen):
    """The inference dataset: one record per served request, written off the request path."""

    enabled: bool = True
    dir: Path = Path("var/dataset")
    """Where segments go; relative paths are taken from the config file's folder."""
    sample_rate: float = Field(default=1.0, ge=0, le=1)
    """Share of requests recorded (errors included in the draw)."""
    queue_size: int = Field(default=65536, gt=0)
    """Records waiting for the writer at most; what happens beyond is ``on_full``."""
    on_full: Literal["block", "drop"] = "drop"
    """``drop``: count the record as dropped and answer at once; ``block``: the request waits
    for room (never silent either way: both are on /metrics)."""
    flush_interval_seconds: float = Field(default=0.2, gt=0)
    """The writer writes what is queued at least this often: at most this much is lost to a
    SIGKILL."""
    max_segment_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    max_segment_seconds: float = Field(default=3600.0, gt=0)
    retention_bytes: int | None = Field(default=None, gt=0)
    """Delete the oldest closed segments past this total size."""
    retention_seconds: float | None = Field(default=None, gt=0)
    """Delete closed segments older than this."""
    parquet: bool = False
    """Also write each closed segment as Parquet (needs pyarrow: canarygate[parquet])."""
    fsync: bool = False
    """fsync after each write: survives power loss, not only a killed process. Slower."""
    redact: RedactConfig = RedactConfig()


class FeedbackConfig(_Frozen):
    max_entries: int = Field(default=100_000, gt=0)
    """Recent predictions that can take feedback; the oldest are forgotten past this."""
    ttl_seconds: float = Field(default=3600.0, gt=0)
    """How long after a prediction its label is accepted."""
    shared_budget_bytes: int = Field(default=256 * 1024 * 1024, ge=1024 * 1024)
    """With state.backend redis: the Redis memory one worker's predictions may use in the
    shared index. A prediction is kept ``ttl_seconds``, or less when the worker's request
    rate would pass this budget in that time (the README gives the arithmetic)."""


class DriftConfig(_Frozen):
    """Online drift against each version's reference profile (defaults: docs/statistics.md §3)."""

    enabled: bool = True
    interval_seconds: float = Field(default=10.0, gt=0)
    """How often arrived traffic is binned and the window evaluated."""
    window_intervals: int = Field(default=6, ge=1)
    """The window: this many of the latest intervals."""
    min_window: int = Field(default=500, ge=1)
    """Rows a window needs before it is judged (smaller ones say window_too_small)."""
    fdr_q: float = Field(default=0.05, gt=0, lt=1)
    """False discovery rate across a version's columns (Benjamini-Hochberg)."""
    warn_psi: float = Field(default=0.1, gt=0)
    alert_psi: float = Field(default=0.25, gt=0)
    alert_l_infinity: float = Field(default=0.1, gt=0, le=1)
    """Categorical columns also alert when significant and some category's share moved by
    this much (the TFDV / SageMaker L-infinity convention)."""
    buffer: int = Field(default=100_000, gt=0)
    """Rows waiting to be binned at most; past it the oldest requests go, counted as dropped
    rows (drift sees a sample). Memory: about 1 KB a single-row request of 30 FP32 features
    (array and dict overheads), about 140 bytes a row in larger batches."""
    max_rows_per_second: float = Field(default=500.0, gt=0)
    """Rows a second binned at most: past it every n-th request is kept, n set each interval
    from the last one's traffic (the tests need hundreds of rows a window, not every row of a
    busy minute, and the background pass must stay small: see drift/monitor.py)."""
    input_drift_action: Literal["report", "pause"] = "report"
    """What an input-drift alert on the candidate does to its rollout: ``report`` (show it,
    the default: input drift reaches both variants alike, so it says nothing against the
    candidate) or ``pause`` (hold the ramp for a person to look)."""


class DetectorsConfig(_Frozen):
    """Sequential change detectors on each version's error and latency streams (docs/statistics.md
    §4): ADWIN, DDM and EDDM on feedback errors, ADWIN and Page-Hinkley on latency."""

    enabled: bool = True
    buffer: int = Field(default=100_000, gt=0)
    """Latencies waiting for the detectors at most; past it the oldest go."""
    max_latencies_per_second: float = Field(default=200.0, gt=0)
    """Latencies a second fed to the detectors at most; past it every n-th request's (the
    detectors are pure Python: the work per interval stays bounded)."""
    latency_calibration: int = Field(default=5000, ge=2)
    """Requests of a version whose log-latency sets the mean and spread that the latency
    detectors measure change against."""
    error_calibration: int = Field(default=500, ge=2)
    """Regressors: labelled rows whose absolute error sets the mean and spread likewise."""
    adwin_delta: float = Field(default=0.002, gt=0, lt=1)
    ph_delta: float = Field(default=0.25, ge=0)
    """Page-Hinkley's tolerated drift, in standard deviations of the standardised stream."""
    ph_threshold: float = Field(default=25.0, gt=0)


class BatchingConfig(_Frozen):
    """Micro-batching of one model's concurrent requests into one onnxruntime run."""

    max_rows: int = Field(default=64, gt=0)
    """Rows one run takes at most (a single request with more rows still runs, alone)."""
    max_wait_us: float = Field(default=500.0, ge=0)
    """How long the first request of a batch waits for others, in microseconds; 0 turns
    micro-batching off. Under 1000 the batch closes at the event loop's next turn (uvloop's
    timers have millisecond resolution)."""
    max_in_flight: int = Field(default=1, gt=0)
    """Batches of one version running at once; requests that arrive meanwhile gather."""
    inline_max_us: float = Field(default=300.0, ge=0)
    """Run a batch on the event loop itself when its run is expected (from the version's own
    timed runs) to take at most this long; 0 always hands batches to a thread. A hand-off
    costs more than a small model's run when the loop is busy (the thread waits for the GIL),
    and a slow model still runs on a thread, so it never stalls other requests."""


class ModelFilesConfig(_Frozen):
    """What a version folder may hold, checked whenever a version is loaded (at start and
    through the admin API). Every file is read only when it is a regular file whose real path
    (links resolved) lies inside ``models_dir``."""

    max_model_bytes: int = Field(default=512 * MiB, ge=1024, le=2 * GiB)
    """Largest ``model.onnx`` (2 GiB is the most one ONNX file without external data holds)."""
    max_file_bytes: int = Field(default=16 * MiB, ge=1024, le=GiB)
    """Largest of the folder's other files: ``metadata.json``, ``profile.json``,
    ``calibration.npz``."""
    max_constant_bytes: int = Field(default=64 * MiB, ge=0, le=16 * GiB)
    """Constants the file does not hold itself but that loading it would make (a
    ``ConstantOfShape`` of a constant shape, any node computed from constants alone, a sparse
    tensor made dense), in bytes in total; a model over it is refused before onnxruntime
    sees it."""


class VersionConfig(_Frozen):
    path: str
    """Folder of the version, relative to ``models_dir``: holds model.onnx and metadata.json."""


class RolloutConfig(_Frozen):
    """A rollout's schedule and judgement knobs (docs/statistics.md §1 says what alpha buys)."""

    steps: list[float] = Field(default=[1, 5, 10, 25, 50, 100], min_length=1, max_length=100)
    """The ramp: candidate weights in percent, strictly increasing, each in (0, 100]."""
    interval_seconds: float = Field(default=10.0, ge=0.1, le=3600)
    """How often the controller judges."""
    min_step_seconds: float = Field(default=60.0, ge=0, le=DAY * 365)
    min_step_requests: int = Field(default=1000, ge=1, le=10**12)
    """Candidate requests a step needs before it can advance."""
    progress_deadline_seconds: float = Field(default=1800.0, ge=1, le=DAY * 365)
    """A step still short of its minimum requests after this long pauses for a person."""
    auto_promote: bool = False
    """Promote by itself after the last step; otherwise wait for a person."""
    alpha: float = Field(default=0.01, gt=0, lt=1)
    """Chance of rolling back a candidate no worse than the baseline, over the whole rollout."""
    shadow_percent: float = Field(default=0.0, ge=0, le=100)
    """Share of baseline requests mirrored to the candidate in a shadow phase before the ramp."""
    shadow_only: bool = False
    """Stay in shadow: judge the candidate on mirrored traffic, never serve it."""
    min_agreement: float = Field(default=0.8, ge=0, lt=1)
    """Shadow: roll back when the label agreement with the baseline is surely below this
    (anytime-valid test; below 1, where one disagreement would already be proof; 0 turns the
    check off)."""
    accuracy_gate: bool = True
    """Judge the candidate's answers by feedback labels against the baseline's (wrong
    predictions, or a regressor's large errors) with the anytime-valid test; it takes its own
    share of ``alpha``. No labels, no verdict: without feedback it only holds that share."""
    output_drift_action: Literal["report", "pause", "rollback"] = "report"
    estimated_accuracy_action: Literal["report", "pause", "rollback"] = "report"
    """A calibrated classifier's accuracy estimated from its scores, before any label: when
    the candidate's interval lies wholly below the baseline's on the same window, report it
    (the default: the estimate is not an anytime-valid test), pause, or roll back."""
    """What an alert on the candidate's outputs against the baseline's (same window) does. A
    different model legitimately answers differently, so the default only reports it."""
    candidate_timeout_ms: float = Field(default=1000.0, ge=0.1, le=600_000)
    """A candidate slower than this for one request is a failure; the baseline answers."""
    latency_tolerance: float = Field(default=1.5, ge=1, le=100)
    """The latency gate rolls back when the candidate surely has more than this many times the
    baseline's share of requests slower than the baseline's p95 (1: any more at all). With
    the traffic of a busy gateway the test sees differences of microseconds."""
    latency_slo_ms: float | None = Field(default=None, ge=0.01, le=3_600_000)
    """Optional absolute SLO: roll back when the candidate surely exceeds it for more than 1 %
    of its runs (an anytime-valid one-sample test with its own share of ``alpha``)."""
    slo_consecutive_failures: int = Field(default=3, ge=1, le=10_000)
    """Kept so older configs load; unused since the SLO gate became anytime-valid."""
    holdback_percent: float = Field(default=1.0, ge=0, lt=50)
    """Share of routed requests the baseline keeps at a step of 100 %, so the comparison goes
    on until promotion (0: the candidate takes everything and only the SLO gate judges)."""
    size_steps: bool = True
    """Size each step's candidate requests from the baseline's error rate p0 in the step
    before: at least 60 / (error_ratio p0) (80 % power to see that ratio at a low share),
    at most ``max_step_requests``; ``min_step_requests`` stays the floor."""
    error_ratio: float = Field(default=2.0, gt=1, le=1000)
    """The error ratio the sizing is for."""
    max_step_requests: int = Field(default=100_000, ge=1, le=10**12)
    promote_on_evidence: bool = True
    """The last step completes only once each comparative metric has shown the candidate no
    worse than the baseline by more than its margin (anytime-valid, at the gate's share of
    ``alpha``); the judgement says what is shown and what is missing."""
    errors_margin: float = Field(default=1.5, gt=1, le=100)
    """Non-inferiority margin of the error rate: candidate at most this times the baseline's."""
    latency_margin: float = Field(default=1.5, gt=1, le=100)
    """... of the share of runs slower than the baseline's p95."""
    confirm_rollout: list[str] = []
    """URLs that must all answer 2xx (to a POST of the rollout as JSON) before the candidate
    gets any traffic; until they do the rollout waits at weight 0 (Flagger's confirm-rollout)."""
    confirm_promotion: list[str] = []
    """URLs that must all answer 2xx before the controller promotes after the last step."""

    @field_validator("confirm_rollout", "confirm_promotion")
    @classmethod
    def _http_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not re.match(r"^https?://[^/\s]+", url):
                raise ValueError(f"{url!r} is not an http(s) URL")
        return urls

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: list[float]) -> list[float]:
        for a, b in itertools.pairwise(steps):
            if b <= a:
                raise ValueError(f"steps must be strictly increasing, but {b} follows {a}")
        if steps[0] <= 0 or steps[-1] > 100:
            raise ValueError("every step must be a percentage in (0, 100]")
        return steps


class ModelConfig(_Frozen):
    name: str = Field(pattern=NAME_PATTERN)
    versions: dict[str, VersionConfig] = Field(min_length=1)
    baseline: str
    candidate: str | None = None
    max_batch_size: int | None = Field(default=None, gt=0)
    batching: BatchingConfig = BatchingConfig()
    allow_non_finite: bool = False
    """Accept NaN and infinity in inputs. Off by default: most models cannot take them."""
    v1_outputs: list[str] | None = None
    """Outputs returned by KServe V1 ``:predict``; all of them when unset."""
    rollout: RolloutConfig | None = None
    """The schedule of the rollout that starts when ``candidate`` is set and no stored state
    says otherwise (defaults when absent)."""

    @field_validator("versions")
    @classmethod
    def _version_names(cls, versions: dict[str, VersionConfig]) -> dict[str, VersionConfig]:
        for key in versions:
            if not re.fullmatch(NAME_PATTERN, key):
                raise ValueError(f"version name {shorten(key)} must be {NAME_RULE} "
                                 f"({NAME_PATTERN})")
        return versions

    @model_validator(mode="after")
    def _roles_exist(self) -> ModelConfig:
        known = ", ".join(sorted(self.versions))
        if self.baseline not in self.versions:
            raise ValueError(f"baseline {self.baseline!r} is not among the versions ({known})")
        if self.candidate is not None:
            if self.candidate not in self.versions:
                raise ValueError(
                    f"candidate {self.candidate!r} is not among the versions ({known})"
                )
            if self.candidate == self.baseline:
                raise ValueError("candidate and baseline must be different versions")
        return self


class StateConfig(_Frozen):
    """Where rollout state lives. ``file`` (the default) is a JSON file in ``state_dir``, for
    one process. ``redis`` shares one rollout among worker processes and replicas: state,
    decision log, the controller's lease, telemetry and the feedback index, in the Redis the
    environment variable ``url_env`` names (``redis://host:6379/0``)."""

    backend: Literal["file", "redis"] = "file"
    url_env: str = "CANARYGATE_REDIS_URL"
    """Environment variable holding the Redis URL (never the URL itself: it may hold a
    password)."""
    prefix: str = Field(default="canarygate", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    """Key prefix: one gateway (one set of rollouts) per prefix on a Redis."""
    lease_seconds: float = Field(default=10.0, ge=1.0, le=300.0)
    """The acting controller's lease: renewed every tick; when its holder dies, another
    worker takes over within this time."""
    sync_seconds: float = Field(default=1.0, ge=0.05, le=30.0)
    """How often a worker ships its telemetry and reads the rollout state (a change is also
    pushed at once, by publish/subscribe)."""
    timeout_seconds: float = Field(default=0.5, gt=0, le=10.0)
    """One Redis command's time limit: past it the store counts as away."""
    telemetry_buffer: int = Field(default=10_000, ge=10, le=10_000_000)
    """Feedback entries waiting to be shipped while Redis is away, at most; what overflows is
    dropped and counted."""


class WebhookConfig(_Frozen):
    url: str = Field(pattern=r"^https?://[^/\s]+")
    format: Literal["json", "slack"] = "json"
    """json: the event as an object; slack: ``{"text": ...}`` as Slack's incoming hooks take."""
    secret_env: str | None = None
    """Environment variable holding a shared secret: each body is signed with HMAC-SHA256 in
    the ``x-canarygate-signature: sha256=<hex>`` header."""


class NotificationsConfig(_Frozen):
    """Webhooks POSTed on every decision that changes a rollout and on drift alerts, from a
    thread per webhook, never in a decision's way."""

    webhooks: list[WebhookConfig] = []
    timeout_seconds: float = Field(default=2.0, gt=0)
    retries: int = Field(default=3, ge=0)
    """Attempts after the first, waiting ``backoff_seconds`` and doubling each time."""
    backoff_seconds: float = Field(default=0.5, ge=0)
    queue_size: int = Field(default=1000, ge=1)
    """Events waiting per webhook; past it new ones are dropped and counted."""


class GatewayConfig(_Frozen):
    server: ServerConfig = ServerConfig()
    admin: AdminConfig = AdminConfig()
    models_dir: Path = Path("models")
    """Where model folders live; relative paths are taken from the config file's folder."""
    dataset: DatasetConfig = DatasetConfig()
    feedback: FeedbackConfig = FeedbackConfig()
    drift: DriftConfig = DriftConfig()
    detectors: DetectorsConfig = DetectorsConfig()
    notifications: NotificationsConfig = NotificationsConfig()
    state_dir: Path = Path("var/state")
    """Rollout state and the decision log; relative paths are taken from the config's folder."""
    state: StateConfig = StateConfig()
    model_files: ModelFilesConfig = ModelFilesConfig()
    models: list[ModelConfig] = Field(min_length=1)

    @field_validator("models")
    @classmethod
    def _unique_names(cls, models: list[ModelConfig]) -> list[ModelConfig]:
        seen: set[str] = set()
        for m in models:
            if m.name in seen:
                raise ValueError(f"model name {m.name!r} appears twice")
            seen.add(m.name)
        return models



def load_config(path: str | Path) -> GatewayConfig:
    """Read and validate a YAML config; ``models_dir`` is resolved against the file's folder."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must be a mapping at the top level")
    config = parse_config(raw, source=str(path))
    folders: dict[str, Any] = {}
    for key in ("models_dir", "state_dir"):
        folder = getattr(config, key)
        folders[key] = folder if folder.is_absolute() else (path.parent / folder).resolve()
    tls = config.server.tls
    if tls is not None:
        folders["server"] = config.server.model_copy(update={"tls": tls.model_copy(update={
            key: getattr(tls, key) if getattr(tls, key).is_absolute()
            else (path.parent / getattr(tls, key)).resolve()
            for key in ("certfile", "keyfile")})})
    data_dir = config.dataset.dir
    if not data_dir.is_absolute():
        folders["dataset"] = config.dataset.model_copy(
            update={"dir": (path.parent / data_dir).resolve()})
    return config.model_copy(update=folders)


def parse_config(raw: dict[str, Any], source: str = "config") -> GatewayConfig:
    try:
        return GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        problems = [f"  {p}" for p in validation_problems(exc, raw)]
        raise ConfigError(f"{source} is invalid:\n" + "\n".join(problems)) from None


def validation_problems(exc: ValidationError, raw: dict[str, Any]) -> list[str]:
    """Each problem pydantic found, as ``where: what``: the key's path (with a model's name
    where the input gives one) and what is wrong with it, with the value that was given."""
    return [f"{_where(err['loc'], raw)}: {_what(err)}" for err in exc.errors()]


def _where(loc: tuple[int | str, ...], raw: dict[str, Any]) -> str:
    """``models[0].baseline`` style, with the model's name when the file gives one."""
    parts: list[str] = []
    node: Any = raw
    for key in loc:
        if isinstance(key, int):
            label = f"[{key}]"
            if isinstance(node, list) and key < len(node) and isinstance(node[key], dict):
                name = node[key].get("name")
                if name is not None:
                    label = f"[{key}] ({name})"
            parts.append(label)
        else:
            parts.append(("." if parts else "") + str(key))
        node = node[key] if _indexable(node, key) else None
    return "".join(parts) or "(top level)"


def _indexable(node: Any, key: int | str) -> bool:
    if isinstance(node, dict):
        return key in node
    return isinstance(node, list) and isinstance(key, int) and key < len(node)


def _what(err: Any) -> str:
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        return "required key is missing"
    value = err.get("input")
    if err["type"] == "string_pattern_mismatch" and NAME_PATTERN in msg:
        msg = f"must be {NAME_RULE} ({NAME_PATTERN})"
    if isinstance(value, str):
        return f"{msg} (got {shorten(value)})"
    if isinstance(value, (int, float, bool)):
        return f"{msg} (got {value!r})"
    return msg


def shorten(text: str, keep: int = 40) -> str:
    """``text`` quoted for a message, cut after ``keep`` characters with its length said (a
    3,000-character name need not come back whole)."""
    if len(text) <= keep:
        return repr(text)
    return f"{text[:keep]!r}... ({len(text)} characters)"
