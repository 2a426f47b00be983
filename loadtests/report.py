"""The bench's table, its ratios (the figures the issue judges) and the profile's text top."""

from __future__ import annotations

import re
import statistics
from collections import Counter
from typing import Any

from loadtests import startup
from loadtests.measure import median_rep, spread

# name -> (numerator, denominator, target, "ge" or "le", what it means)
TARGETS: dict[str, tuple[str, str, float, str, str]] = {
    "all_on_vs_minimal_ort": ("canarygate-all-on", "minimal-ort", 1.3, "ge",
                              "canarygate with everything on / minimal Starlette+ORT, req/s c32"),
    "all_on_vs_mlserver": ("canarygate-all-on", "mlserver", 10.0, "ge",
                           "canarygate with everything on / MLServer (same ONNX), req/s c32"),
    "all_on_vs_recording_off": ("canarygate-all-on", "canarygate-recording-off", 0.85, "ge",
                                "everything on / recording and drift off, req/s c32"),
    "all_on_vs_bare": ("canarygate-all-on", "bare-starlette", 0.5, "ge",
                       "everything on / bare Starlette, req/s c32 (perf.md goal)"),
    "all_on_vs_against": ("canarygate-all-on", "canarygate-all-on-against", 1.0, "ge",
                          "everything on / the same on the code given by --against, req/s c32"),
}


def _valid(entry: dict[str, Any] | None) -> str | None:
    """Why a server's figures cannot be used (None: they can)."""
    if not entry:
        return "not run"
    if entry.get("error"):
        return "failed: " + entry["error"].splitlines()[0][:120]
    reps = entry.get("wrk") or []
    if not reps:
        return "no reps"
    bad = sum(r.get("error_count", 0) for r in reps)
    if bad:
        return f"answered {bad} errors under load"
    return None


def _ratio(num: float | None, den: float | None) -> float | None:
    return round(num / den, 3) if num and den else None


def _judge(value: float | None, target: float, op: str) -> bool | None:
    if value is None:
        return None
    return value >= target if op == "ge" else value <= target


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    servers = results.get("servers", {})
    out: dict[str, Any] = {}
    for key, (num, den, target, op, what) in TARGETS.items():
        if num not in servers or den not in servers:
            continue
        problems = [f"{n}: {why}" for n in (num, den) if (why := _valid(servers.get(n)))]
        value = None
        if not problems:
            value = _ratio(spread(servers[num]["wrk"], "rps")["median"],
                           spread(servers[den]["wrk"], "rps")["median"])
        out[key] = {"value": value, "target": target, "op": op, "met": _judge(value, target, op),
                    "what": what, "invalid": "; ".join(problems) or None,
                    "caveat": _rollout_caveat(servers, (num, den))}
    out.update(_cpu_ratios(servers))
    out.update(_tail_ratios(servers))
    batching = results.get("batching")
    if batching and not batching.get("skipped"):
        c = batching.get("connections")
        # The target is the run-dominated model's; breast-cancer v1's run is a tenth of its
        # HTTP, so batching cannot double its rows a second: reported, no target.
        out["batched_vs_unbatched_c128"] = _batching_ratio(
            batching, None, f"v1 (and v2 at 50 %): rows/s with micro-batching on / off, wrk c{c}")
        wide = batching.get("wide")
        if wide:
            out["wide_batched_vs_unbatched_c128"] = _batching_ratio(
                wide, 2.0, f"the run-dominated model (breast-cancer/wide): rows/s with "
                f"micro-batching on / off, wrk c{c}; met only with p99 no worse")
    bulk = results.get("bulk")
    if bulk and not bulk.get("error") and bulk.get("json") and bulk.get("binary"):
        value = _ratio(spread(bulk["binary"], "rows_per_second")["median"],
                       spread(bulk["json"], "rows_per_second")["median"])
        out["binary_vs_json_1024_rows"] = {
            "value": value, "target": None, "op": "info", "met": None, "invalid": None,
            "what": f"canarygate all on, {bulk['rows_per_request']:,}-row requests: rows/s in the "
                    f"binary tensor extension / as JSON, c{bulk['connections']} (info)"}
    memory = results.get("memory")
    if memory and not memory.get("error") and memory.get("ratio"):
        first, second = memory["targets"]
        out["memory_growth"] = {
            "value": memory["ratio"], "target": 1.10, "op": "le",
            "met": _judge(memory["ratio"], 1.10, "le"),
            "what": f"canarygate RSS after {second:,} / after {first:,} requests",
            "invalid": "errors under load" if memory.get("errors") else None}
    return out


def _batching_ratio(pair: dict[str, Any], target: float | None, what: str) -> dict[str, Any]:
    """Rows a second batched / unbatched (one row a request), and both p99s; with a target,
    met when the ratio reaches it and the batched p99 is no worse."""
    if pair.get("error"):
        return {"value": None, "target": target, "op": "ge" if target else "info", "met": None,
                "what": what, "invalid": pair["error"].splitlines()[0][:120]}
    on, off = pair.get("batched"), pair.get("unbatched")
    problems = [f"{n}: {why}" for n, e in (("batched", on), ("unbatched", off))
                if (why := _valid(e))]
    value = None
    p99: dict[str, Any] = {}
    if not problems and on and off:
        value = _ratio(spread(on["wrk"], "rps")["median"], spread(off["wrk"], "rps")["median"])
        p99 = {k: (median_rep(e["wrk"]) or {}).get("p99_ms") for k, e in
               (("batched", on), ("unbatched", off))}
    met = None
    if target is not None and value is not None:
        no_worse = (p99.get("batched") is not None and p99.get("unbatched") is not None
                    and p99["batched"] <= p99["unbatched"])
        met = bool(_judge(value, target, "ge")) and no_worse
    return {"value": value, "target": target, "op": "ge" if target else "info", "met": met,
            "what": what, "p99_ms": p99, "invalid": "; ".join(problems) or None}


def _rollout_caveat(servers: dict[str, Any], names: tuple[str, ...]) -> str | None:
    moved = []
    for name in names:
        reps = servers[name].get("wrk", []) + servers[name].get("open", [])
        phases = {(r.get("rollout") or {}).get("phase") for r in reps if r.get("rollout")}
        if phases - {"progressing"}:
            moved.append(f"{name}'s rollout went {', '.join(sorted(str(p) for p in phases))}")
    return "; ".join(moved) or None


# The tail targets: canarygate all on / the minimal endpoint, open loop, medians of the reps.
TAIL_TARGETS = {"p99_ms": 2.0, "p99.9_ms": 3.0}
TAIL_PAIR = ("canarygate-all-on", "minimal-ort")
# Besides 60 % of each one's own wrk rate (the reps under "open"), the pair runs open loop at
# one rate common to both, half the minimal endpoint's wrk rate (judged by the same targets),
# and at 30 % and 80 % of each one's own (reported): kind -> (share of its own wrk rate, or
# None for the common rate; what it is).
COMMON_FRACTION = 0.5
MORE_LOADS: dict[str, tuple[float | None, str]] = {
    "open_common": (None, "half the minimal endpoint's wrk rate"),
    "open_30": (0.3, "30 % of each one's wrk rate"),
    "open_80": (0.8, "80 % of each one's wrk rate"),
}
_TAIL_KEYS = {"open": ("", True), "open_common": ("_common_rate", True),
              "open_30": ("_at_30pct", False), "open_80": ("_at_80pct", False)}


def _tail_ratios(servers: dict[str, Any]) -> dict[str, Any]:
    """canarygate-all-on's open-loop p99 and p99.9 over the minimal endpoint's at each load
    the pair ran (60 % of each one's own wrk rate, or the ``--open-rate`` given; and
    ``MORE_LOADS``)."""
    num, den = (servers.get(n) for n in TAIL_PAIR)
    out: dict[str, Any] = {}
    for kind, (suffix, judged) in _TAIL_KEYS.items():
        if not num or not den or not num.get(kind) or not den.get(kind):
            continue
        rate_num, rate_den = (entry[kind][0].get("rate", 0) for entry in (num, den))
        rates = f"{rate_num:,.0f} against {rate_den:,.0f} req/s"
        for key, target in TAIL_TARGETS.items():
            value = _ratio(spread(num[kind], key)["median"], spread(den[kind], key)["median"])
            name = key.removesuffix("_ms")
            what = f"open-loop {name} of canarygate all on / the minimal endpoint's ({rates})"
            out[f"tail_{name}{suffix}_all_on_vs_minimal_ort"] = (
                {"value": value, "target": target, "op": "le",
                 "met": _judge(value, target, "le"), "what": what, "invalid": None}
                if judged else
                {"value": value, "target": None, "op": "info", "met": None,
                 "what": what + " (info)", "invalid": None})
    return out


def _cpu_ratios(servers: dict[str, Any]) -> dict[str, Any]:
    """The same comparisons by server CPU per request (denominator's / numerator's): what the
    throughput ratio would be if both were CPU-bound on one core, and much less moved by other
    load on the machine than req/s. Informative, no target."""
    out: dict[str, Any] = {}
    for key, (num, den, _, _, what) in TARGETS.items():
        if num not in servers or den not in servers:
            continue
        if _valid(servers.get(num)) or _valid(servers.get(den)):
            continue
        a = spread(servers[num]["wrk"], "cpu_us_per_req")["median"]
        b = spread(servers[den]["wrk"], "cpu_us_per_req")["median"]
        out[f"cpu_{key}"] = {"value": _ratio(b, a), "target": None, "op": "info", "met": None,
                             "what": what.replace("req/s", "by CPU µs/request,") + " (info)",
                             "invalid": None}
    return out


def hygiene_summary(results: dict[str, Any]) -> dict[str, Any]:
    reps = [r for group in _all_groups(results) for r in group]
    steal = [r["steal_share"] for r in reps if "steal_share" in r]
    return {
        "reps": len(reps),
        "discarded_and_rerun": sum(len(r.get("discarded_reps", [])) for r in reps),
        "kept_contaminated": sum(bool(r.get("contaminated")) for r in reps),
        "idle_gate_timeouts": sum(bool(r.get("idle_gate_timed_out")) for r in reps),
        "steal_median": round(statistics.median(steal), 3) if steal else None,
        "steal_max": max(steal) if steal else None,
    }


def _all_groups(results: dict[str, Any]) -> list[list[dict[str, Any]]]:
    groups = []
    for entry in results.get("servers", {}).values():
        groups += [entry.get("wrk", []), entry.get("open", []),
                   *(entry.get(kind, []) for kind in MORE_LOADS)]
    batching = results.get("batching") or {}
    bulk = results.get("bulk") or {}
    groups += [bulk.get("json", []), bulk.get("binary", [])]
    for pair in (batching, batching.get("wide") or {}):
        for key in ("batched", "unbatched"):
            if isinstance(pair.get(key), dict):
                groups.append(pair[key].get("wrk", []))
    return groups


def rep_line(rep: dict[str, Any]) -> str:
    if rep.get("tool") == "openloop":
        head = (f"{rep['achieved_rate']:,.0f} of {rep['offered_rate']:,.0f} req/s, "
                f"p50 {rep['p50_ms']} p99 {rep['p99_ms']} p99.9 {rep['p99.9_ms']} ms")
    else:
        head = f"{rep['rps']:,.0f} req/s, p50 {rep['p50_ms']:.2f} p99 {rep['p99_ms']:.2f} ms"
    flags = []
    if rep.get("error_count"):
        flags.append(f"ERRORS {rep['errors']}")
    if rep.get("contaminated"):
        flags.append("CONTAMINATED (kept after retries)")
    if rep.get("idle_gate_timed_out"):
        flags.append("machine never idle")
    if "loop_lag_p99_le_ms" in rep:
        flags.append(f"loop lag p99 <= {rep['loop_lag_p99_le_ms']:g} ms, "
                     f"{rep['loop_stalls_10ms_per_s']:g} stalls >= 10 ms/s, "
                     f"{rep['loop_stalls_50ms']} >= 50 ms")
    if rep.get("records_dropped"):
        flags.append(f"DATASET DROPPED {rep['records_dropped']:,} of "
                     f"{rep['records_dropped'] + rep['records_captured']:,} records")
    elif "records_captured" in rep:
        flags.append(f"{rep['records_captured']:,} records, none dropped")
    rollout = rep.get("rollout")
    if rollout:
        flags.append(f"rollout {rollout.get('phase')} {rollout.get('weight')}%")
    return (f"{head}, {rep.get('cpu_us_per_req', '-')} µs/req, other CPU "
            f"{rep['other_cpu_cores']:.2f} core, steal {rep['steal_share']:.0%}"
            + (" [" + "; ".join(flags) + "]" if flags else ""))


def _n(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _server_row(name: str, entry: dict[str, Any]) -> str:
    why = _valid(entry)
    if why and not entry.get("wrk"):
        return f"{name:<26} {why}"
    rps = spread(entry["wrk"], "rps")
    mid = median_rep(entry["wrk"]) or {}
    cpu = spread(entry["wrk"], "cpu_us_per_req")["median"]
    rate = f"{_n(rps['median'])} ({_n(rps['min'])}-{_n(rps['max'])})"
    row = (f"{name:<26} {rate:<24} {_n(mid.get('p50_ms'), 2):>6} {_n(mid.get('p99_ms'), 2):>7}"
           f" {_n(cpu):>6}")
    ol = median_rep(entry.get("open", []), "p99_ms")
    if ol:
        row += (f" | {_n(ol['rate']):>6} {_n(ol['achieved_rate']):>6} {_n(ol['p50_ms'], 2):>6}"
                f" {_n(ol['p99_ms'], 2):>7} {_n(ol['p99.9_ms'], 2):>7} {_n(ol['max_ms'], 1):>7}")
    else:
        row += " | " + "-".center(44)
    errors = sum(r.get("error_count", 0) for r in entry["wrk"] + entry.get("open", []))
    notes = [n for n in (why, *_open_notes(entry)) if n]
    return row + f"  {errors}" + (f"  ({'; '.join(notes)})" if notes else "")


def _open_notes(entry: dict[str, Any]) -> list[str]:
    """What the open-loop reps say about the server (or the loader) beyond the percentiles."""
    reps = entry.get("open", [])
    notes = []
    behind = sum((r.get("achieved_rate") or 0) < 0.97 * (r.get("offered_rate") or 0)
                 for r in reps)
    if behind:
        notes.append(f"{behind} open-loop rep(s) got under 97 % of the rate")
    queued = [r["pool"]["queued_for_connection"] for r in reps
              if (r.get("pool") or {}).get("queued_for_connection")]
    if queued:
        notes.append(f"{len(queued)} open-loop rep(s) had all connections busy "
                     f"({max(queued):,} requests waited): the server stalled")
    lagging = [r["send_lag_p99_ms"] for r in reps if (r.get("send_lag_p99_ms") or 0) > 5]
    if lagging:
        notes.append(f"the loader itself was late (send lag p99 up to {max(lagging):g} ms)")
    return notes


def _record_lines(entry: dict[str, Any]) -> list[str]:
    """The dataset over the server's measured reps: every answer recorded, or how many not."""
    reps = [r for r in entry.get("wrk", []) + entry.get("open", []) if "records_captured" in r]
    if not reps:
        return []
    captured = sum(r["records_captured"] for r in reps)
    dropped = sum(r.get("records_dropped", 0) for r in reps)
    if not dropped:
        return [f"{'':<26} dataset: {captured:,} records over the reps, none dropped"]
    return [f"{'':<26} NOTE the dataset dropped {dropped:,} of {captured + dropped:,} records "
            f"in {sum(bool(r.get('records_dropped')) for r in reps)} rep(s): its writer fell "
            "behind, so those reps did not record every answer"]


def _rollout_lines(entry: dict[str, Any]) -> list[str]:
    views = [r["rollout"] for r in entry.get("wrk", []) + entry.get("open", []) if r.get("rollout")]
    if not views:
        return []
    phases = Counter(f"{v.get('phase')} {v.get('weight')}%" for v in views)
    lines = [f"{'':<26} rollout after each rep: " + ", ".join(f"{k} x{n}" for k, n in
                                                          phases.items())]
    moved = next((v for v in views if v.get("phase") != "progressing"), None)
    if moved:
        lines.append(f"{'':<26} NOTE the rollout left the held 50 % step ({moved.get('phase')}:"
                     f" {moved.get('reason')}): the reps after it served v1 only")
    return lines


def table(results: dict[str, Any]) -> str:
    o = results.get("options", {})
    h = results.get("hygiene_summary", {})
    mode = "quick" if o.get("quick") else "full"
    lines = [
        f"canarygate bench, {mode}: {o.get('reps')} rep(s) x {o.get('duration'):g} s per "
        f"config, wrk -t1 -c{o.get('connections')}; open loop at "
        + (f"{o['open_rate']:g} req/s" if o.get("open_rate") else
           f"{o.get('open_fraction', 0):.0%} of each server's wrk rate"),
        f"server on CPU {results['pinning']['server_cpu']}, load on CPU "
        f"{results['pinning']['loader_cpu']}; reps {h.get('reps')}, re-run for other CPU load "
        f"{h.get('discarded_and_rerun')}, kept contaminated {h.get('kept_contaminated')}, "
        f"idle-gate timeouts {h.get('idle_gate_timeouts')}, steal median "
        f"{_pct(h.get('steal_median'))} max {_pct(h.get('steal_max'))}",
        *_busy_warning(h),
        "",
        f"{'config':<26} {'req/s median (min-max)':<24} {'p50ms':>6} {'p99ms':>7} "
        f"{'µs/req':>6} | {'OLrate':>6} {'OLgot':>6} {'p50ms':>6} {'p99ms':>7} {'p99.9':>7} "
        f"{'max':>7}  errors",
    ]
    for name, entry in results.get("servers", {}).items():
        lines.append(_server_row(name, entry))
        lines += _rollout_lines(entry)
        lines += _record_lines(entry)
    lines += _more_load_lines(results.get("servers", {}))
    lines += _breakdown_lines(results.get("servers", {}))
    lines += _batching_lines(results.get("batching"))
    lines += _bulk_lines(results.get("bulk"))
    lines += _memory_lines(results.get("memory"))
    lines += startup.lines(results.get("startup"))
    lines += ["", "ratios (same run; median req/s of the reps):"]
    width = max([32, *map(len, results.get("ratios", {}))])
    for key, r in results.get("ratios", {}).items():
        if r["op"] == "info":
            judged = "(no target)"
        else:
            verdict = {True: "MET", False: "MISSED", None: "n/a"}[r["met"]]
            judged = f"target {'≥' if r['op'] == 'ge' else '≤'} {r['target']:g}  {verdict}"
        extra = ""
        if r.get("p99_ms"):
            extra = " (p99 ms: " + ", ".join(f"{k} {v}" for k, v in r["p99_ms"].items()) + ")"
        notes = [n for n in (r.get("invalid"), r.get("caveat")) if n]
        lines.append(f"  {key:<{width}} {_n(r['value'], 3):>7}  {judged}{extra}"
                     + (f"  [{'; '.join(notes)}]" if notes else ""))
        lines.append(f"  {'':<{width}} {r['what']}")
    return "\n".join(lines)


def _more_load_lines(servers: dict[str, Any]) -> list[str]:
    """The tail pair's open-loop figures at the other loads (medians of the reps)."""
    out: list[str] = []
    for kind, (_, label) in MORE_LOADS.items():
        rows = [(name, servers[name][kind]) for name in TAIL_PAIR
                if servers.get(name, {}).get(kind)]
        if not rows:
            continue
        if not out:
            out = ["", "open loop at other loads (medians of the reps; ms):"]
        out.append(f"  at {label}:")
        for name, reps in rows:
            got = {k: spread(reps, k)["median"] for k in ("rate", "p50_ms", "p99_ms",
                                                           "p99.9_ms")}
            out.append(f"    {name:<22} {_n(got['rate'], 0):>7} req/s  p50 "
                       f"{_n(got['p50_ms'], 2)}  p99 {_n(got['p99_ms'], 2)}  p99.9 "
                       f"{_n(got['p99.9_ms'], 2)}")
    return out


def _busy_warning(h: dict[str, Any]) -> list[str]:
    bad = (h.get("kept_contaminated") or 0) + (h.get("idle_gate_timeouts") or 0)
    if not bad:
        return []
    return [f"WARNING: the machine was busy with other work during this run "
            f"({h.get('kept_contaminated')} of {h.get('reps')} reps kept contaminated): the "
            "figures, and even the ratios, are indicative only"]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _breakdown_lines(servers: dict[str, Any]) -> list[str]:
    """Where an open-loop request's time goes, for each canarygate of the run (its median rep
    by p99): the client's latency, the gateway's own time from reading the request to sending
    the answer (per variant: in it, the wait for a run and the run), and the event loop's
    stalls. What the client sees beyond the gateway's own time is spent outside the app:
    waiting for the loop to read the request or to write the answer, and the kernel."""
    out: list[str] = []
    for name, entry in servers.items():
        rep = median_rep([r for r in entry.get("open", []) if r.get("gateway")], "p99_ms")
        if not name.startswith("canarygate") or rep is None:
            continue
        if not out:
            out = ["", "where an open-loop request's time goes (median rep by p99; ms):"]
        out.append(f"  {name}: client p50 {rep['p50_ms']} p99 {rep['p99_ms']} p99.9 "
                   f"{rep['p99.9_ms']}; loop lag p99 <= {rep.get('loop_lag_p99_le_ms', '-')}, "
                   f"{rep.get('loop_stalls_10ms_per_s', '-')} stalls >= 10 ms a second")
        for v in rep["gateway"]:
            total, wait, run = (v.get(k) or {} for k in ("total_ms", "queue_ms", "inference_ms"))
            out.append(f"    {v['variant']} {v['version']}: in the gateway p50 {total.get('p50')} "
                       f"p99 {total.get('p99')} p99.9 {total.get('p99_9')}; wait for a run "
                       f"p99 {wait.get('p99')}; run p99 {run.get('p99')}")
    return out


def _batching_lines(batching: dict[str, Any] | None) -> list[str]:
    if not batching:
        return []
    if batching.get("skipped"):
        return ["", f"micro-batching: skipped: {batching['skipped']}"]
    lines = ["", f"micro-batching at wrk c{batching.get('connections')} (one row per request):"]
    wide = batching.get("wide") or {}
    for prefix, pair in (("canarygate", batching), ("wide", wide)):
        for key in ("batched", "unbatched"):
            entry = pair.get(key)
            if entry:
                lines.append(_server_row(f"{prefix}-{key}", entry))
    if wide.get("error"):
        lines.append(f"  the run-dominated model: FAILED: {wide['error'].splitlines()[0]}")
    return lines


def _bulk_lines(bulk: dict[str, Any] | None) -> list[str]:
    if not bulk:
        return []
    if bulk.get("error"):
        return ["", f"1,024-row requests: FAILED: {bulk['error'].splitlines()[0]}"]
    lines = ["", f"{bulk['rows_per_request']:,}-row requests on canarygate-all-on, closed loop "
             f"c{bulk['connections']} (median of the reps):"]
    for fmt in ("json", "binary"):
        best = median_rep(bulk.get(fmt) or [], "rows_per_second")
        if best:
            lines.append(f"  {fmt:<7} {best['rows_per_second']:>11,.0f} rows/s  "
                         f"{best['rps']:>7,.1f} req/s  p50 {best['p50_ms']:.2f} ms  p99 "
                         f"{best['p99_ms']:.2f} ms  body {best['body_bytes']:,} bytes  "
                         f"{best.get('cpu_us_per_req', '-')} µs/req")
    return lines


def _memory_lines(memory: dict[str, Any] | None) -> list[str]:
    if not memory:
        return []
    if memory.get("error"):
        return ["", f"memory: FAILED: {memory['error'].splitlines()[0]}"]
    first, second = memory["targets"]
    mib = 2**20

    def at(target: int) -> str:
        sent = memory.get(f"requests_at_{target}", target)
        return (f"after {target:,} requests ({sent:,} sent) "
                f"{memory[f'rss_after_{target}_bytes'] / mib:.1f} MiB")

    return ["", f"memory (canarygate-all-on, whole tree RSS): start "
            f"{memory['rss_start_bytes'] / mib:.1f} MiB, {at(first)}, {at(second)}; "
            f"{memory['errors']} errors"]


def profile_top(raw: str, limit: int = 30) -> str:
    """A text top from py-spy's raw (collapsed) stacks: own and cumulative samples."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        samples += n
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    if not samples:
        return "no samples\n"
    out = [f"{samples} samples (py-spy, active threads only)", "", "own time:"]
    out += [f"  {n / samples:6.1%}  {f}" for f, n in own.most_common(limit)]
    out += ["", "cumulative (the frame or anything it called):"]
    out += [f"  {n / samples:6.1%}  {f}" for f, n in total.most_common(limit)]
    return "\n".join(out) + "\n"
