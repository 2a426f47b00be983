"""The evidence a rollout carries between segments of its steps, in its state.

A segment ends at every change of the step's window: a step completed, a pause, a resume, a
weight set by hand, a restart. Its log e-values are folded into each begun step's product
(``RolloutState.restarts_log_e``) and into the plain product (``carried_log_e``, shown to
people). While a segment runs, the controller keeps its last log e-values in the state
(``pending_log_e``), so a restart folds what the lost window had shown rather than drop it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from canarygate.config import RolloutConfig
from canarygate.rollout.evalues import Carried
from canarygate.rollout.state import RolloutState
from canarygate.stats import VariantStepStats

NON_INFERIORITY = "_ni"  # the e-processes of promotion on evidence


def slot(state: RolloutState) -> int:
    return max(state.step, 0)


def fresh(state: RolloutState) -> Carried:
    """The evidence of an e-process with nothing folded yet: 1 for every step's product."""
    return Carried((), slot(state), len(state.schedule.steps))


_LAST: list[tuple[tuple[object, ...], dict[str, Carried]]] = []


def carried(state: RolloutState) -> dict[str, Carried]:
    """Each e-process's evidence from before the current segment. The state's evidence dicts
    are never changed in place (``fold`` makes new ones), so the last answer is kept for the
    ticks of one segment, which share them."""
    key = (state.restarts_log_e, state.carried_log_e, slot(state), len(state.schedule.steps))
    if _LAST and all(a is b for a, b in zip(_LAST[0][0], key[:2], strict=False)) and (
            _LAST[0][0][2:] == key[2:]):
        return dict(_LAST[0][1])
    found = _carried(state)
    _LAST[:] = [(key, found)]
    return dict(found)


def _carried(state: RolloutState) -> dict[str, Carried]:
    slots = len(state.schedule.steps)
    out = {}
    for name in set(state.restarts_log_e) | set(state.carried_log_e):
        if name.endswith(NON_INFERIORITY):  # evidence for the candidate: the plain product
            out[name] = Carried((state.carried_log_e.get(name, 0.0),))
            continue
        restarts = state.restarts_log_e.get(
            name, [state.carried_log_e[name]] if name in state.carried_log_e else [])
        out[name] = Carried(tuple(restarts), slot(state), slots)
    return out


def fold(state: RolloutState, step_log_e: Mapping[str, float]) -> dict[str, Any]:
    """The state's changes (for ``evolve``) that end the current segment with ``step_log_e``."""
    plain = dict(state.carried_log_e)
    restarts = {name: list(values) for name, values in state.restarts_log_e.items()}
    known = carried(state)
    for name, value in step_log_e.items():
        plain[name] = plain.get(name, 0.0) + value
        if not name.endswith(NON_INFERIORITY):
            restarts[name] = known.get(name, fresh(state)).started(value)
    return {"carried_log_e": plain, "restarts_log_e": restarts, "pending_log_e": {}}


def fold_pending(state: RolloutState) -> RolloutState:
    """After a restart: the lost window's last judged evidence, folded (not dropped). Its
    segment stopped at the last tick before the restart, a stopping time, so the fold keeps
    the bound."""
    if not state.pending_log_e:
        return state
    return state.evolve(**fold(state, state.pending_log_e))


def routed_weight(state: RolloutState) -> float:
    """The weight the router uses: the step's, less the baseline's holdback at 100 %."""
    return min(state.weight, 100.0 - state.schedule.holdback_percent)


def sized(schedule: RolloutConfig, baseline: VariantStepStats) -> int | None:
    """A step's candidate requests sized from the baseline's error rate in the step before
    (research note §6.4: about 60 / (r p0) requests give 80 % power to see a ratio r at a low
    share); None when sizing is off or the baseline had no errors (nothing to size from:
    a step would grow without bound)."""
    if not schedule.size_steps or baseline.errors == 0:
        return None
    p0 = baseline.errors / baseline.requests
    need = math.ceil(60 / (schedule.error_ratio * p0))
    return min(max(need, schedule.min_step_requests), schedule.max_step_requests)


def promotion_step(schedule: RolloutConfig) -> int:
    """From which step promotion needs its evidence: the last step under 100 %, where the
    comparison has the most information per request (at 100 % only the holdback is left to
    compare with), or the last step when every step is 100 %."""
    under = [i for i, weight in enumerate(schedule.steps) if weight < 100]
    return under[-1] if under else len(schedule.steps) - 1
