"""Webhooks: each decision that changes a rollout, and each new drift alert, POSTed as JSON
(or Slack's ``{"text": ...}``) to every configured URL, signed with HMAC-SHA256 when a secret
is set.

The controller only puts the event on each webhook's bounded queue (``notify`` never waits);
a thread per webhook sends, retrying with doubling back-off, so a receiver that fails or hangs
delays only its own later events. Outcomes are counted in
``canarygate_notifications_total{outcome}``: sent, retried, failed (every attempt failed),
dropped (the queue was full).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import queue
import threading
import time
from typing import Any

import httpx
import orjson

from canarygate.config import NotificationsConfig, WebhookConfig
from canarygate.drift.report import DriftReport
from canarygate.errors import ConfigError
from canarygate.metrics import Metrics

log = logging.getLogger("canarygate.notify")

# Decisions that change a rollout (a hold changes nothing and is not sent).
CHANGES = frozenset({"start", "advance", "pause", "resume", "set_weight", "promote",
                     "rollback", "await_promotion", "confirm", "restore"})
SIGNATURE = "x-canarygate-signature"
_STOP = object()


def sign(secret: bytes, body: bytes) -> str:
    """The signature header's value: ``sha256=`` and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def slack_text(event: dict[str, Any]) -> str:
    figures = event.get("figures") or {}
    text = (f"canarygate: {event['model']} {event['action']} by {event['actor']}: "
            f"{event['reason']}")
    if event.get("candidate"):
        text += f" (baseline {event.get('baseline')}, candidate {event['candidate']})"
    if figures.get("gate") and figures.get("statistic") is not None:
        text += (f"; {figures['gate']}: statistic {figures['statistic']:.4g} against "
                 f"{figures.get('threshold')}")
    return text


class _Target:
    """One webhook: its queue and its sending thread."""

    def __init__(self, hook: WebhookConfig, config: NotificationsConfig,
                 metrics: Metrics) -> None:
        self.hook, self.config, self.metrics = hook, config, metrics
        secret = os.environ.get(hook.secret_env, "") if hook.secret_env else ""
        if hook.secret_env and not secret:
            raise ConfigError(f"notifications.webhooks ({hook.url}).secret_env: the variable "
                              f"{hook.secret_env} is not set")
        self.secret = secret.encode() or None
        self.queue: queue.Queue[object] = queue.Queue(config.queue_size)
        self.thread = threading.Thread(target=self._run, name=f"webhook {hook.url}",
                                       daemon=True)

    def put(self, event: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait(event)
        except queue.Full:
            self.metrics.notification("dropped")

    def _run(self) -> None:
        with httpx.Client(timeout=self.config.timeout_seconds) as client:
            while (event := self.queue.get()) is not _STOP:
                assert isinstance(event, dict)
                self._deliver(client, event)

    def _deliver(self, client: httpx.Client, event: dict[str, Any]) -> None:
        payload = {"text": slack_text(event)} if self.hook.format == "slack" else event
        body = orjson.dumps(payload)
        headers = {"content-type": "application/json", "x-canarygate-event": event["action"]}
        if self.secret is not None:
            headers[SIGNATURE] = sign(self.secret, body)
        wait = self.config.backoff_seconds
        for attempt in range(self.config.retries + 1):
            if attempt:
                self.metrics.notification("retried")
                time.sleep(wait)
                wait *= 2
            try:
                answer = client.post(self.hook.url, content=body, headers=headers)
                if answer.is_success:
                    self.metrics.notification("sent")
                    return
                problem = f"answered {answer.status_code}"
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
        self.metrics.notification("failed")
        log.warning("webhook %s: %s event of %s not delivered after %d attempts (%s)",
                    self.hook.url, event["action"], event["model"], attempt + 1, problem)


class Notifier:
    def __init__(self, config: NotificationsConfig, metrics: Metrics) -> None:
        self.targets = [_Target(hook, config, metrics) for hook in config.webhooks]
        self._alerts: dict[tuple[str, str], frozenset[str]] = {}

    def start(self) -> None:
        for target in self.targets:
            target.thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued, for at most ``timeout`` seconds per webhook."""
        for target in self.targets:
            if target.thread.is_alive():
                target.queue.put(_STOP)
                target.thread.join(timeout)

    def notify(self, event: dict[str, Any]) -> None:
        for target in self.targets:
            target.put(event)

    def decision(self, decision: dict[str, Any], figures: dict[str, Any]) -> None:
        """A decision record (the controller's ``_record``): sent when it changed something."""
        if decision["action"] not in CHANGES:
            return
        keep = ("time", "model", "action", "actor", "reason", "phase", "phase_before",
                "step", "weight", "weight_before", "baseline", "candidate", "revision")
        self.notify({**{k: decision.get(k) for k in keep}, "figures": figures})

    def drift(self, report: DriftReport | None) -> None:
        """A new drift alert: a variant whose alerting input features grew since the last
        report (a steady alert is sent once)."""
        if report is None:
            return
        for v in report.variants:
            key = (report.model, v.variant)
            alerts = frozenset(v.alerts)
            if alerts - self._alerts.get(key, frozenset()):
                scores = {c.name: c.scores.get("psi") for c in v.features if c.level == "alert"}
                self.notify({"time": report.evaluated_at, "model": report.model,
                             "action": "drift_alert", "actor": "drift",
                             "reason": f"{v.variant} version {v.version}: input drift alert "
                                       f"on {', '.join(sorted(alerts))}",
                             "version": v.version, "variant": v.variant,
                             "figures": {"psi": scores}})
            self._alerts[key] = alerts
