"""Rollouts of every model: the controller's tick and the release engineer's actions.

Each change is a new ``RolloutState`` that is installed at once (a new ``Routing`` published
to the routing table, which is all the request path reads), then written by the persister,
together with a decision record that says who or what acted, why, and with which figures.
``tick`` runs on the event loop and only computes; the disk work happens on the persister's
thread.

One module past 400 lines, for a reason: it is one state machine, whose people's actions and
controller's tick go through the same few private transitions (``_install``, ``_transition``,
``_record``); split across files, each file would reach into the others' privates.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol

from canarygate.config import RolloutConfig
from canarygate.errors import BadRequest, Conflict, StoreUnavailable
from canarygate.metrics import Metrics
from canarygate.notify.confirm import Answer, Confirmations
from canarygate.rollout import ledger
from canarygate.rollout.gates import GateResult, Verdict
from canarygate.rollout.judge import (
    MIN_TAU_REQUESTS,
    IntervalMemory,
    Judgement,
    alpha_shares,
    judge_step,
    no_data,
)
from canarygate.rollout.persist import StateWriter
from canarygate.rollout.quality import EvidenceSource, NoEvidence, error_tau, quality_gates
from canarygate.rollout.state import ACTIVE, Phase, RolloutState
from canarygate.router import Routing, RoutingTable
from canarygate.runtime import ModelRegistry, ServedModel
from canarygate.runtime.catalog import VersionCatalog
from canarygate.stats import StepStats, VariantStepStats

log = logging.getLogger("canarygate.rollout")

SERVING = frozenset({Phase.PROGRESSING, Phase.PAUSED, Phase.AWAITING_PROMOTION})
# Judged every interval. A paused rollout still serves its candidate at its weight, so its gates
# still run: a failure rolls it back, but nothing advances it.
WATCHED = frozenset({Phase.SHADOW, Phase.PROGRESSING, Phase.AWAITING_PROMOTION, Phase.PAUSED})
# While only a person can move a rollout on (paused, awaiting promotion, shadow only), its
# holds go to the decision log when a gate's verdict changes and every this many intervals
# otherwise (5 minutes at the default interval), not every interval.
QUIET_HOLD_EVERY = 30
AUTOMATIC = frozenset({"controller", "gateway"})  # actors whose writes need the lease


class Shared(Protocol):
    """Other workers of the same rollouts (the Redis link): who acts, and their counts."""

    def acting(self) -> bool: ...

    def remote_steps(self, model: str, window: int) -> list[StepStats]: ...

    async def resync(self) -> None: ...


class RolloutManager:
    def __init__(self, registry: ModelRegistry, table: RoutingTable, persister: StateWriter,
                 metrics: Metrics, evidence: EvidenceSource | None = None,
                 clock: Callable[[], float] = time.time, shared: Shared | None = None) -> None:
        self.registry = registry
        self.table = table
        self.persister = persister
        self.metrics = metrics
        self.source: EvidenceSource = evidence or NoEvidence()
        self.shared = shared
        self._writes: dict[str, Future[bool]] = {}  # a person's last write, per model
        self.clock = clock
        self.states: dict[str, RolloutState] = {}
        self.memory: dict[str, IntervalMemory] = {}
        # The verdicts of the last logged quiet hold per model, and the quiet holds since.
        self.quiet: dict[str, tuple[tuple[tuple[str, str], ...], int]] = {}
        self.last_gates: dict[str, list[GateResult]] = {}
        self.unavailable: dict[str, dict[str, str]] = {}  # versions that failed to load
        self._wakes: dict[str, asyncio.Event] = {}  # a controller task's wait, to cut short
        # Called with the model's name after each of its controller's ticks (the history).
        self.tick_hooks: list[Callable[[str], object]] = []
        # Called with each decision record and the state's figures (notifications); they must
        # not block: the controller waits for them.
        self.decision_hooks: list[Callable[[dict[str, Any], dict[str, Any]], object]] = []
        self.confirmations = Confirmations()
        self._confirm_logged: dict[str, str] = {}  # the last logged answer of an external gate

    def step_stats(self, name: str) -> StepStats:
        """The current step's counters of a model, as the judge sees them: this worker's, and
        every other worker's merged in when several share the rollout."""
        routing = self.table.get(name)
        others = self.shared.remote_steps(name, routing.window) if self.shared else []
        return routing.step_stats.merged(others) if others else routing.step_stats

    def acting(self) -> bool:
        """Whether this worker's controller acts (the only one, or the lease holder)."""
        return self.shared is None or self.shared.acting()

    def adopt(self, stored: dict[str, RolloutState], force: frozenset[str] = frozenset()
              ) -> None:
        """Follow the stored states: install each one newer than what runs here, or of the
        same revision but different (another worker's write won), or any different one for
        the models in ``force`` (this worker's own write was refused). Its routing at once;
        the step's counters afresh when it started a new step."""
        for name, state in stored.items():
            current = self.states.get(name)
            if name not in self.registry.models or current == state or (
                    current is not None and state.revision < current.revision
                    and name not in force):
                continue
            if state.baseline not in self.registry.models[name].versions or (
                    state.active and state.candidate not in self.registry.models[name].versions):
                log.error("%s: the stored rollout names a version this worker has not loaded "
                          "(%s, %s); keeping revision %s", name, state.baseline,
                          state.candidate, current.revision if current else None)
                continue
            self._install(state, fresh_window=current is None or state.window != current.window)

    async def confirmed(self, name: str, timeout: float = 5.0) -> bool:
        """Whether a person's last action on ``name`` was stored (always, with one process's
        store). When it was refused (another worker changed the rollout first), this worker
        follows the store again before it answers False."""
        write = self._writes.pop(name, None)
        if write is None:
            return True
        try:
            taken = await asyncio.wait_for(asyncio.wrap_future(write), timeout)
        except TimeoutError:
            raise StoreUnavailable("the rollout state store (Redis) did not take the change "
                                   f"within {timeout:g} s") from None
        if not taken and self.shared is not None:
            await self.shared.resync()
        return taken

    def require_store(self) -> None:
        if not self.persister.writable():
            raise StoreUnavailable("the rollout state store (Redis) cannot be reached: the "
                                   "gateway serves with the last routing it knew, and takes "
                                   "no action on rollouts until the store is back")

    def waiting(self, name: str) -> dict[str, Any] | None:
        """What the current step still waits for before it may advance (None without a
        rollout under way): the same figures and words the controller's holds log."""
        state = self.states[name]
        if not state.active:
            return None
        window = self.step_stats(name)
        elapsed = self.clock() - (state.step_started_at or self.clock())
        shadow = state.phase == Phase.SHADOW
        waits = step_waits(state, window, elapsed)
        return {"candidate_requests": window.shadow.pairs if shadow
                else window.candidate.requests,
                "min_step_requests": state.schedule.min_step_requests,
                "step_seconds": round(elapsed, 1),
                "min_step_seconds": state.schedule.min_step_seconds,
                "text": ", ".join(waits) if waits else "nothing: the next judgement decides"}

    # -- start-up ---------------------------------------------------------------------------

    def restore(self, stored: dict[str, RolloutState],
                catalog: VersionCatalog | None = None) -> None:
        """Stored state wins over the config: a rollback stays a rollback across restarts, and
        a rollout is never started again without a person.

        Versions registered at run time are loaded again first (``catalog``). A stored rollout
        whose candidate cannot be loaded is kept but paused, saying why, and that candidate is
        not served; one whose baseline cannot be loaded ends, the config's baseline serving.
        """
        self.unavailable = catalog.reload() if catalog is not None else {}
        for name, served in self.registry.models.items():
            state = stored.get(name)
            if state is None:
                self._install(RolloutState(model=name, baseline=served.config.baseline),
                              fresh_window=True)
                mc = served.config
                if mc.candidate is not None:
                    self.start(name, mc.candidate, mc.rollout or RolloutConfig(),
                               actor="config", reason="candidate named in the config")
            elif state.baseline not in served.versions:
                self._restore_without_baseline(served, state)
            elif state.active and state.candidate not in served.versions:
                self._restore_without_candidate(served, state)
            else:
                # The step's counts did not survive the restart, so neither does its clock
                # (or the progress deadline would pause a step that was doing fine).
                if state.active:
                    state = dataclasses.replace(ledger.fold_pending(state),
                                                step_started_at=self.clock())
                self._install(state, fresh_window=True)

    def _missing(self, model: str, version: str) -> str:
        return self.unavailable.get(model, {}).get(
            version, f"version {version!r} is neither in the config nor registered")

    def _restore_without_candidate(self, served: ServedModel, state: RolloutState) -> None:
        assert state.candidate is not None
        reason = (f"candidate version {state.candidate!r} could not be loaded at start "
                  f"({self._missing(served.name, state.candidate)}); it is not served. "
                  "Register it again and resume, or roll back")
        log.error("%s: rollout kept but paused: %s", served.name, reason)
        resume = state.resume_phase if state.phase == Phase.PAUSED else state.phase
        new = state.evolve(phase=Phase.PAUSED, resume_phase=resume, reason=reason,
                           step_started_at=self.clock(),
                           figures={"gate": "restore", "missing_version": state.candidate})
        self.states[served.name] = state  # what the record says it was (never installed)
        self._transition(new, "pause", "gateway", reason, fresh_window=True)

    def _restore_without_baseline(self, served: ServedModel, state: RolloutState) -> None:
        base = served.config.baseline
        reason = (f"stored baseline version {state.baseline!r} could not be loaded at start "
                  f"({self._missing(served.name, state.baseline)}); the config's baseline "
                  f"{base!r} serves instead and the stored rollout ({state.phase.value}) is "
                  "over. Nothing was started: start the next rollout by hand")
        log.error("%s: %s", served.name, reason)
        new = state.evolve(baseline=base, candidate=None, phase=Phase.IDLE, step=-1,
                           weight=0.0, resume_phase=None, carried_log_e={}, tau_seconds=None,
                           restarts_log_e={}, pending_log_e={}, tail_tau_seconds=None,
                           min_requests=None, error_tau=None, reason=reason,
                           figures={"gate": "restore", "missing_version": state.baseline})
        self.states[served.name] = state
        self._transition(new, "restore", "gateway", reason, fresh_window=True)

    # -- release engineers' actions ---------------------------------------------------------

    def start(self, name: str, candidate: str, schedule: RolloutConfig, *, actor: str,
              reason: str) -> RolloutState:
        self.require_store()
        served, state = self._get(name)
        if state.active:
            raise Conflict(f"model {name!r} already has a rollout ({state.phase.value}); "
                           "promote it or roll it back first")
        served.version(candidate)
        if candidate == state.baseline:
            raise BadRequest(f"version {candidate!r} is already the baseline of {name!r}")
        # Verdicts of the rollout before belong to it: a new one starts with none.
        self.last_gates.pop(name, None)
        now = self.clock()
        shadow = schedule.shadow_percent > 0
        confirm = bool(schedule.confirm_rollout)  # no candidate run until the URLs say yes
        self.confirmations.forget(name)
        self._confirm_logged.pop(name, None)
        new = state.evolve(
            candidate=candidate, schedule=schedule,
            phase=Phase.SHADOW if shadow else Phase.PROGRESSING, awaiting_confirmation=confirm,
            step=-1 if shadow else 0, weight=0.0 if shadow or confirm else schedule.steps[0],
            started_at=now, step_started_at=now, resume_phase=None, carried_log_e={},
            restarts_log_e={}, pending_log_e={}, min_requests=None,
            tau_seconds=_p95(self.step_stats(name).baseline),
            tail_tau_seconds=_p95(self.step_stats(name).baseline, 0.999),
            error_tau=error_tau(self.step_stats(name)),
            reason=reason, figures={},
        )
        self._transition(new, "start", actor, reason, fresh_window=True)
        return new

    def set_weight(self, name: str, weight: float, *, actor: str, reason: str) -> RolloutState:
        """A person takes the wheel: the weight holds (paused) until they resume."""
        self.require_store()
        served, state = self._get(name)
        self._require_active(state, "set its weight")
        self._require_candidate(served, state, "set its weight")
        if not 0 <= weight <= 100:
            raise BadRequest(f"weight must be a percentage from 0 to 100, not {weight}")
        resume = state.resume_phase or (state.phase if state.phase != Phase.PAUSED
                                        else Phase.PROGRESSING)
        new = state.evolve(weight=float(weight), phase=Phase.PAUSED, resume_phase=resume,
                           **self._carry(state), step_started_at=self.clock(),
                           reason=reason)
        self._transition(new, "set_weight", actor, reason, fresh_window=True)
        return new

    def pause(self, name: str, *, actor: str, reason: str) -> RolloutState:
        self.require_store()
        _, state = self._get(name)
        self._require_active(state, "pause it")
        if state.phase == Phase.PAUSED:
            return state
        new = state.evolve(phase=Phase.PAUSED, resume_phase=state.phase, reason=reason,
                           **self._carry(state))
        self._transition(new, "pause", actor, reason, fresh_window=True)
        return new

    def resume(self, name: str, *, actor: str, reason: str) -> RolloutState:
        self.require_store()
        served, state = self._get(name)
        if state.phase != Phase.PAUSED:
            raise Conflict(f"the rollout of {name!r} is {state.phase.value}, not paused")
        self._require_candidate(served, state, "resume it")
        new = state.evolve(phase=state.resume_phase or Phase.PROGRESSING, resume_phase=None,
                           step_started_at=self.clock(), reason=reason, **self._carry(state))
        self._transition(new, "resume", actor, reason, fresh_window=True)
        return new

    def promote(self, name: str, *, actor: str, reason: str) -> RolloutState:
        self.require_store()
        served, state = self._get(name)
        self._require_active(state, "promote it")
        self._require_candidate(served, state, "promote it")
        new = _promoted(state, reason)
        self._transition(new, "promote", actor, reason, fresh_window=True)
        return new

    def rollback(self, name: str, *, actor: str, reason: str,
                 figures: dict[str, Any] | None = None,
                 gates: list[GateResult] | None = None) -> RolloutState:
        self.require_store()
        _, state = self._get(name)
        self._require_active(state, "roll it back")
        new = state.evolve(phase=Phase.ROLLED_BACK, weight=0.0, resume_phase=None,
                           reason=reason, figures=figures or {})
        self._transition(new, "rollback", actor, reason, gates, fresh_window=True)
        return new

    def registered(self, name: str, version: str, path: str, *, actor: str,
                   reason: str) -> None:
        """A version registered at run time goes to the decision log like any action."""
        decision = {"time": self.clock(), "model": name, "action": "register_version",
                    "actor": actor, "reason": reason, "version": version, "path": path}
        self.persister.commit(None, decision)
        self.metrics.decision(name, "register_version")

    # -- the controller ---------------------------------------------------------------------

    def tick(self, name: str) -> dict[str, Any] | None:
        """Judge one model's rollout once and act on the verdicts; the decision record, or None
        when nothing was logged (a quiet hold, or no rollout to judge)."""
        _, state = self._get(name)
        if state.phase not in WATCHED:
            return None
        if state.awaiting_confirmation and state.phase != Phase.PAUSED:  # paused: a person
            return self._confirm_rollout(state)
        now = self.clock()
        window = self.step_stats(name)
        if state.tau_seconds is None and (tau := _p95(window.baseline)) is not None:
            # Installing it freezes the thresholds in the step's counts (_install).
            state = self._settle(state.evolve(tau_seconds=tau,
                                              tail_tau_seconds=_p95(window.baseline, 0.999)))
        if state.error_tau is None and (etau := error_tau(window)) is not None:
            state = self._settle(state.evolve(error_tau=etau))
        elapsed = now - (state.step_started_at or now)
        judgement = self._judge(state, window, elapsed, self.memory.get(name, IntervalMemory()))
        self.memory[name] = judgement.memory
        gates, step_log_e = judgement.gates, judgement.step_log_e
        state = self._checkpoint(state, step_log_e)
        self.last_gates[name] = gates
        for gate in gates:
            self.metrics.verdict(name, gate.gate, gate.verdict.value)
            self.metrics.gate_figures(name, gate.gate, gate.statistic, gate.threshold)

        failed = [g for g in gates if g.verdict == Verdict.FAIL]
        if failed:
            worst = failed[0]
            reason = f"{worst.gate} gate failed: {worst.detail}"
            new = state.evolve(phase=Phase.ROLLED_BACK, weight=0.0, resume_phase=None,
                               reason=reason, figures=worst.as_json())
            return self._transition(new, "rollback", "controller", reason, gates,
                                    fresh_window=True)
        if state.phase == Phase.PAUSED:
            return self._quiet_hold(state, gates, f"paused: {state.reason}")
        paused = [g for g in gates if g.verdict == Verdict.PAUSE]
        if paused and state.phase != Phase.AWAITING_PROMOTION:
            reason = f"{paused[0].gate}: {paused[0].detail}"
            new = state.evolve(phase=Phase.PAUSED, resume_phase=state.phase, reason=reason,
                               figures=paused[0].as_json(),
                               **self._carry(state, step_log_e))
            return self._transition(new, "pause", "controller", reason, gates,
                                    fresh_window=True)

        marginal = [g.gate for g in gates if g.verdict == Verdict.MARGINAL]
        shadow = state.phase == Phase.SHADOW
        waiting = step_waits(state, window, elapsed)
        for label, names in (("marginal", marginal), ("no data", no_data(gates))):
            if names:
                waiting.append(f"{label}: " + ", ".join(names))
        if state.phase == Phase.AWAITING_PROMOTION or (shadow and state.schedule.shadow_only):
            waiting.append("waiting for a person" if not shadow else "shadow only")
            return self._quiet_hold(state, gates, "; ".join(waiting))
        if waiting:
            return self._record(state, "hold", "controller", "; ".join(waiting), gates)
        return self._advance(state, step_log_e, gates)

    def _quiet_hold(self, state: RolloutState, gates: list[GateResult],
                    reason: str) -> dict[str, Any] | None:
        """A hold while only a person can move the rollout on: logged when a gate's verdict
        changes and every ``QUIET_HOLD_EVERY`` intervals, so the log shows every change of
        judgement without repeating one unchanged record for hours."""
        verdicts = tuple((g.gate, g.verdict.value) for g in gates)
        last, ticks = self.quiet.get(state.model, ((), 0))
        if verdicts == last and ticks + 1 < QUIET_HOLD_EVERY:
            self.quiet[state.model] = (last, ticks + 1)
            return None
        self.quiet[state.model] = (verdicts, 0)
        return self._record(state, "hold", "controller", reason, gates)

    def _advance(self, state: RolloutState, step_log_e: dict[str, float],
                 gates: list[GateResult]) -> dict[str, Any] | None:
        window = self.step_stats(state.model)
        carried = self._carry(state, step_log_e)
        tau = _p95(window.baseline) or state.tau_seconds
        tail = _p95(window.baseline, 0.999) or state.tail_tau_seconds
        etau = error_tau(window) or state.error_tau
        steps = state.schedule.steps
        now = self.clock()
        if state.step + 1 < len(steps):
            step = state.step + 1
            reason = f"step {state.step + 1} of {len(steps)} held: {steps[step]} %"
            new = state.evolve(phase=Phase.PROGRESSING, step=step, weight=steps[step],
                               step_started_at=now, **carried, tau_seconds=tau,
                               tail_tau_seconds=tail, error_tau=etau, reason=reason,
                               min_requests=ledger.sized(state.schedule, window.baseline))
            return self._transition(new, "advance", "controller", reason, gates,
                                    fresh_window=True)
        if state.schedule.auto_promote:
            reason = "every step held"
            if state.schedule.confirm_promotion:
                answer = self._ask(state, "confirm_promotion")
                if answer is None or not answer.confirmed:
                    return self._confirm_wait(state, "confirm_promotion", answer, gates)
                reason += f"; confirm_promotion: {answer.detail}"
            return self._transition(_promoted(state, reason), "promote", "controller", reason,
                                    fresh_window=True)
        reason = "every step held; waiting for a person to promote"
        new = state.evolve(phase=Phase.AWAITING_PROMOTION, **carried,
                           step_started_at=now, reason=reason)
        return self._transition(new, "await_promotion", "controller", reason, gates,
                                fresh_window=True)

    def _ask(self, state: RolloutState, gate: str) -> Answer | None:
        urls = (state.schedule.confirm_rollout if gate == "confirm_rollout"
                else state.schedule.confirm_promotion)
        event = {"model": state.model, "gate": gate, "baseline": state.baseline,
                 "candidate": state.candidate, "phase": state.phase.value,
                 "step": state.step, "weight": state.weight}
        return self.confirmations.answer(state.model, gate, urls, event,
                                         state.schedule.interval_seconds)

    def _confirm_rollout(self, state: RolloutState) -> dict[str, Any] | None:
        """A rollout waiting at weight 0 for its confirm_rollout URLs: it starts serving its
        first step (or its shadow phase) once they all answer 2xx."""
        answer = self._ask(state, "confirm_rollout")
        if answer is None or not answer.confirmed:
            return self._confirm_wait(state, "confirm_rollout", answer, [])
        reason = f"confirm_rollout: {answer.detail}"
        shadow = state.phase == Phase.SHADOW
        new = state.evolve(awaiting_confirmation=False, step_started_at=self.clock(),
                           weight=0.0 if shadow else state.schedule.steps[0], reason=reason)
        return self._transition(new, "confirm", "controller", reason, fresh_window=True)

    def _confirm_wait(self, state: RolloutState, gate: str, answer: Answer | None,
                      gates: list[GateResult]) -> dict[str, Any] | None:
        """A hold on an external gate, logged when its answer changes (which URL said what)."""
        detail = "asked, no answer yet" if answer is None else answer.detail
        waiting = GateResult(gate, Verdict.NO_DATA, detail=detail)
        self.last_gates[state.model] = [*gates, waiting]
        if self._confirm_logged.get(state.model) == detail:
            return None
        self._confirm_logged[state.model] = detail
        return self._record(state, "hold", "controller", f"waiting for {gate}: {detail}",
                            [*gates, waiting])

    async def run(self, name: str) -> None:
        """The controller task of one model: a tick every analysis interval. A change of the
        rollout by a person (a start, a new schedule) restarts the wait under the new
        schedule, so a rollout started with a 1 s interval is not judged first after the idle
        state's 10 s."""
        wake = self._wakes.setdefault(name, asyncio.Event())
        while True:
            wake.clear()
            try:
                await asyncio.wait_for(wake.wait(), self.states[name].schedule.interval_seconds)
                continue
            except TimeoutError:
                pass
            if not self.acting():
                continue
            started = time.perf_counter()
            try:
                self.tick(name)
                for hook in self.tick_hooks:
                    hook(name)
            except Exception:
                log.exception("controller of %r failed a tick", name)
            self.metrics.controller_tick(name, time.perf_counter() - started)

    # -- plumbing ---------------------------------------------------------------------------

    def _get(self, name: str) -> tuple[ServedModel, RolloutState]:
        served = self.registry.get(name)
        return served, self.states[name]

    @staticmethod
    def _require_active(state: RolloutState, doing: str) -> None:
        if not state.active:
            raise Conflict(f"model {state.model!r} has no rollout under way "
                           f"({state.phase.value}): cannot {doing}")

    def _require_candidate(self, served: ServedModel, state: RolloutState, doing: str) -> None:
        if state.candidate is not None and state.candidate not in served.versions:
            raise Conflict(f"candidate version {state.candidate!r} of {served.name!r} is not "
                           f"loaded ({self._missing(served.name, state.candidate)}): cannot "
                           f"{doing}; register it again (POST /admin/models/{served.name}/"
                           "versions) or roll back")

    def _judge(self, state: RolloutState, window: StepStats, elapsed: float,
               memory: IntervalMemory) -> Judgement:
        """Every gate on the step: how the candidate serves (judge.py), then what it answers
        (quality.py), with the log e-values of the anytime-valid ones."""
        shadow = state.phase == Phase.SHADOW
        carried = ledger.carried(state)
        judged = judge_step(
            state.schedule, window, weight=ledger.routed_weight(state), shadow=shadow,
            carried=carried, elapsed=elapsed, memory=memory,
            last=state.step >= ledger.promotion_step(state.schedule),
            fresh=ledger.fresh(state))
        more, more_log_e = quality_gates(
            state.schedule, window, self.source.evidence(state.model, state), carried=carried,
            alphas=alpha_shares(state.schedule), candidate=state.candidate, shadow=shadow,
            fresh=ledger.fresh(state))
        return Judgement(judged.gates + more, {**judged.step_log_e, **more_log_e},
                         judged.memory)

    def _carry(self, state: RolloutState,
               step_log_e: dict[str, float] | None = None) -> dict[str, Any]:
        """Fold the current segment's e-values into the carried evidence (the segment ends
        here): the state's changes, for ``evolve``."""
        if step_log_e is None:
            if state.phase not in WATCHED:
                return ledger.fold(state, {})
            step_log_e = self._judge(state, self.step_stats(state.model), 0.0,
                                     IntervalMemory()).step_log_e
        return ledger.fold(state, step_log_e)

    def _checkpoint(self, state: RolloutState, step_log_e: dict[str, float]) -> RolloutState:
        """Keep the segment's evidence in the stored state, for a restart to fold in: the
        same revision stored over itself (no new revision a tick, so a person's action made
        from the revision they saw is not refused for the controller's bookkeeping), and only
        when the evidence changed."""
        if not step_log_e or step_log_e == state.pending_log_e:
            return state
        return self._settle(state.checkpoint(pending_log_e=dict(step_log_e)))

    def _settle(self, state: RolloutState) -> RolloutState:
        """A threshold the step froze: installed and saved like any change of state (every
        revision is stored, so workers agree on what each one means), with no decision."""
        self._install(state)
        self.persister.commit(state, None, fenced=True)
        return state

    def _install(self, state: RolloutState, fresh_window: bool = False) -> RolloutState:
        """Publish the routing ``state`` asks for; ``fresh_window`` starts a step's counters."""
        served = self.registry.get(state.model)
        candidate = (served.versions.get(state.candidate)
                     if state.candidate and state.phase in ACTIVE else None)
        serving = state.phase in SERVING and candidate is not None
        if fresh_window or state.model not in self.table:
            slo = state.schedule.latency_slo_ms
            step_stats = StepStats.fresh(slo / 1000 if slo else None, state.tau_seconds,
                                         state.tail_tau_seconds, started=self.clock())
            self.memory[state.model] = IntervalMemory()
            self.quiet.pop(state.model, None)
        else:
            step_stats = self.table.get(state.model).step_stats
        if state.tau_seconds is not None and step_stats.baseline.tau != state.tau_seconds:
            step_stats.thresholds(state.tau_seconds, state.tail_tau_seconds)
        step_stats.error_scale(state.error_tau)
        routing = Routing(
            baseline=served.versions[state.baseline],
            candidate=candidate,
            weight=ledger.routed_weight(state) if serving else 0.0,
            step=state.step if serving else -1,
            shadow_share=state.schedule.shadow_percent / 100
            if state.phase == Phase.SHADOW and not state.awaiting_confirmation else 0.0,
            salt=state.salt,
            candidate_timeout=state.schedule.candidate_timeout_ms / 1000,
            step_stats=step_stats,
            window=state.window,
        )
        self.table.set(state.model, routing)
        self.states[state.model] = state
        self.metrics.rollout(state.model, state.phase.value, routing.weight,
                            [p.value for p in Phase])
        return state

    def _transition(self, state: RolloutState, action: str, actor: str, reason: str,
                    gates: list[GateResult] | None = None,
                    fresh_window: bool = False) -> dict[str, Any]:
        """Install ``state``, save it with the decision that made it (returned)."""
        before = self.states[state.model]
        if fresh_window:  # every worker counts the new step under this revision
            state = dataclasses.replace(state, window=state.revision)
        self._install(state, fresh_window)
        if actor != "controller" and state.model in self._wakes:
            self._wakes[state.model].set()
        decision = self._decision(state, action, actor, reason, gates, before)
        write = self.persister.commit(state, decision, fenced=actor in AUTOMATIC)
        if write is not None and actor not in AUTOMATIC:
            self._writes[state.model] = write
        self._announce(decision, state)
        if action in ("rollback", "promote", "pause", "start", "advance"):
            log.info("%s: %s by %s (%s)", state.model, action, actor, reason)
        return decision

    def _record(self, state: RolloutState, action: str, actor: str, reason: str,
                gates: list[GateResult] | None) -> dict[str, Any]:
        """A decision that changes no state (a hold)."""
        decision = self._decision(state, action, actor, reason, gates, state)
        self.persister.commit(None, decision, fenced=actor in AUTOMATIC)
        self._announce(decision, state)
        return decision

    def _decision(self, state: RolloutState, action: str, actor: str, reason: str,
                  gates: list[GateResult] | None, before: RolloutState) -> dict[str, Any]:
        decision = {
            "time": self.clock(), "model": state.model, "action": action, "actor": actor,
            "reason": reason, "phase": state.phase.value, "phase_before": before.phase.value,
            "step": state.step, "weight": state.weight, "weight_before": before.weight,
            "baseline": state.baseline, "candidate": state.candidate,
            "revision": state.revision,
            "gates": [g.as_json() for g in gates or []],
        }
        if gates:  # a judgement: with what each variant served in the last minute
            decision["traffic"] = self.source.traffic(state.model)
        return decision

    def _announce(self, decision: dict[str, Any], state: RolloutState) -> None:
        """Count a decision and hand it to the hooks (notifications)."""
        self.metrics.decision(state.model, decision["action"])
        for hook in self.decision_hooks:
            try:
                hook(decision, state.figures)
            except Exception:  # a notification must never undo or stop a decision
                log.exception("a decision hook failed on %s %s", state.model,
                              decision["action"])


def _promoted(state: RolloutState, reason: str) -> RolloutState:
    """The candidate becomes the baseline, serving everything."""
    if state.candidate is None:
        raise Conflict(f"model {state.model!r} has no candidate to promote")
    return state.evolve(phase=Phase.PROMOTED, baseline=state.candidate, candidate=None,
                        weight=0.0, step=-1, resume_phase=None, reason=reason)


def step_waits(state: RolloutState, window: StepStats, elapsed: float) -> list[str]:
    """What a step lacks of its minimum time and candidate requests (shadow pairs in shadow;
    on the ramp, the step's size from the baseline's error rate when larger), in the words of
    the decision log: "12 of 30 s", "66 of 200 candidate requests"."""
    shadow = state.phase == Phase.SHADOW
    done = window.shadow.pairs if shadow else window.candidate.requests
    needed = max(state.schedule.min_step_requests, 0 if shadow else state.min_requests or 0)
    waits = []
    if elapsed < state.schedule.min_step_seconds:
        waits.append(f"{elapsed:.0f} of {state.schedule.min_step_seconds:.0f} s")
    if done < needed:
        waits.append(f"{done} of {needed} candidate requests")
    return waits


def _p95(arm: VariantStepStats, q: float = 0.95) -> float | None:
    """The arm's p95 (or another quantile ``q``), once it has enough requests."""
    if arm.latency.count < MIN_TAU_REQUESTS:
        return None
    return arm.latency.quantile(q)
