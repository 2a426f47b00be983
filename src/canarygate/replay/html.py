"""The replay report as one self-contained HTML file: inline CSS, inline SVG, no script.

Every figure comes from the JSON report, and every table has an id, so a test can read the
tables back and find the JSON's numbers (floats are written with six significant digits).
"""

from __future__ import annotations

from html import escape
from typing import Any

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:2px 10px;border-bottom:1px solid #eee;
text-align:right}th{background:#f6f6f6}td:first-child,th:first-child{text-align:left}
.pass{color:#176f2c}.fail{color:#b00020}.marginal,.no_data{color:#a05a00}
.verdict{font-size:1.3em;font-weight:600}svg{margin:4px 12px 4px 0}.plots{display:flex;
flex-wrap:wrap}
"""
PLOTTED_FEATURES = 6


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def table(ident: str, head: list[str], rows: list[list[Any]]) -> str:
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{escape(fmt(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f'<table id="{ident}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def bars(title: str, labels: list[str], values: list[float | None], top: float = 1.0,
         width: int = 340, height: int = 170) -> str:
    """A small bar chart: one bar per label, heights relative to ``top``."""
    n = max(len(values), 1)
    step = (width - 40) / n
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="{escape(title)}">',
             f'<text x="4" y="14" font-size="12">{escape(title)}</text>',
             f'<line x1="36" y1="{height - 20}" x2="{width}" y2="{height - 20}" stroke="#999"/>',
             f'<text x="2" y="30" font-size="10">{fmt(top)}</text>',
             f'<text x="2" y="{height - 22}" font-size="10">0</text>']
    plot = height - 50
    for i, (label, v) in enumerate(zip(labels, values, strict=True)):
        x = 38 + i * step
        if v is not None:
            h = plot * min(max(v / top if top else 0.0, 0.0), 1.0)
            parts.append(f'<rect x="{x:.1f}" y="{height - 20 - h:.1f}" width="{step * 0.8:.1f}" '
                         f'height="{h:.1f}" fill="#4a78b5"><title>{escape(label)}: {fmt(v)}'
                         '</title></rect>')
        parts.append(f'<text x="{x:.1f}" y="{height - 6}" font-size="9">{escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def paired(title: str, edges: list[float], first: list[int], second: list[int],
           width: int = 520, height: int = 190) -> str:
    """Two histograms over the same bins, side by side in each bin (served grey, candidate
    blue)."""
    top = max([*first, *second, 1])
    step = (width - 40) / max(len(first), 1)
    plot = height - 60
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="{escape(title)}">',
             f'<text x="4" y="14" font-size="12">{escape(title)}</text>',
             '<rect x="300" y="5" width="10" height="10" fill="#aaa"/>'
             '<text x="314" y="14" font-size="11">served</text>'
             '<rect x="370" y="5" width="10" height="10" fill="#4a78b5"/>'
             '<text x="384" y="14" font-size="11">candidate</text>',
             f'<text x="2" y="30" font-size="10">{top}</text>',
             f'<line x1="36" y1="{height - 30}" x2="{width}" y2="{height - 30}" stroke="#999"/>']
    for i, (a, b) in enumerate(zip(first, second, strict=True)):
        x = 38 + i * step
        for k, (count, colour) in enumerate(((a, "#aaa"), (b, "#4a78b5"))):
            h = plot * count / top
            parts.append(f'<rect x="{x + k * step * 0.42:.1f}" y="{height - 30 - h:.1f}" '
                         f'width="{step * 0.4:.1f}" height="{h:.1f}" fill="{colour}">'
                         f"<title>{fmt(edges[i])} to {fmt(edges[i + 1])}: {count}</title></rect>")
    parts.append(f'<text x="36" y="{height - 14}" font-size="10">{fmt(edges[0])}</text>'
                 f'<text x="{width - 60}" y="{height - 14}" font-size="10">{fmt(edges[-1])}'
                 "</text></svg>")
    return "".join(parts)


def _summary(r: dict[str, Any]) -> str:
    d, e = r["dataset"], r["errors"]
    rows = [["model", r["model"]], ["candidate", r["candidate"]["version"]],
            ["baseline (served)", r["baseline"]["version"]], ["task", r["task"]],
            ["segments", d["segments"]], ["records read", d["records"]],
            ["replayed records", d["replayed_records"]], ["replayed rows", d["replayed_rows"]],
            ["candidate failed records", e["candidate_failed_records"]],
            ["candidate failed rows", e["candidate_failed_rows"]],
            ["served failed records", e["served_failed_records"]]]
    skipped = [[reason, n] for reason, n in d["skipped"].items()]
    out = "<h2>Data</h2>" + table("summary", ["what", "value"], rows)
    if e["first_candidate_error"]:
        out += f"<p>First candidate error: <code>{escape(e['first_candidate_error'])}</code></p>"
    return out + "<h3>Skipped records</h3>" + table("skipped", ["reason", "records"], skipped)


def _answers(r: dict[str, Any]) -> str:
    out = ""
    a = r["agreement"]
    if a:
        out += "<h2>Agreement with the served answers</h2>" + table(
            "agreement", ["pairs", "agreements", "rate", "95 % low", "95 % high"],
            [[a["pairs"], a["agreements"], a["rate"], a["low"], a["high"]]])
        out += table("disagreements", ["served", "candidate", "rows"],
                     [[k["served"], k["candidate"], k["rows"]] for k in a["disagreements"]])
    f = r["differences"]
    if f and f.get("pairs"):
        keys = ["pairs", "mean_abs", "p50_abs", "p90_abs", "max_abs", "mean_rel", "p90_rel"]
        out += "<h2>Differences from the served values</h2>" + table(
            "differences", keys, [[f[k] for k in keys]])
    acc = r["accuracy"]
    if acc:
        out += "<h2>Against the labels</h2>" + table(
            "accuracy", list(acc), [list(acc.values())])
    return out


def _gates(r: dict[str, Any]) -> str:
    rows = [[g["gate"], g["verdict"], g["statistic"], g["threshold"], g["detail"]]
            for g in r["gates"]]
    reasons = "".join(f"<li>{escape(x)}</li>" for x in r["reasons"])
    return (f'<p class="verdict {escape(r["verdict"])}">verdict: {escape(r["verdict"])}</p>'
            f"<ul>{reasons}</ul>" + table(
                "gates", ["gate", "verdict", "log e-value", "threshold", "detail"], rows))


def _cost_and_drift(r: dict[str, Any]) -> str:
    c = r["cost"]
    out = "<h2>Run cost on the same batches</h2>" + table(
        "cost", ["timed rows", "batches", "candidate µs/row", "baseline µs/row", "ratio"],
        [[c["timed_rows"], c["batches"], c["candidate_us_per_row"], c["baseline_us_per_row"],
          c["ratio"]]])
    hist = r.get("output_histogram")
    if hist:
        out += "<h2>Outputs, served and candidate</h2>" + paired(
            f"{hist['output']} (column {hist['column']})", hist["edges"], hist["served"],
            hist["candidate"])
        out += table("output-histogram", ["from", "to", "served", "candidate"],
                     [[hist["edges"][i], hist["edges"][i + 1], a, b] for i, (a, b) in
                      enumerate(zip(hist["served"], hist["candidate"], strict=True))])
    o = r["output_drift"]
    if o:
        out += f"<h2>Output drift, candidate against served: {escape(o['state'])}</h2>"
        out += table("drift", ["output", "level", "psi", "p adjusted", "js distance"],
                     [[x["name"], x["level"], x.get("psi"), x.get("p_adjusted"),
                       x.get("js_distance")] for x in o["outputs"]])
    return out


def _slices(r: dict[str, Any]) -> str:
    key = "agreement" if r["task"] == "classification" else "mean_abs_diff"
    rows, plots = [], []
    ranked = sorted(r["slices"], key=lambda f: -_spread(f["slices"], key))
    for feature in r["slices"]:
        for s in feature["slices"]:
            rows.append([feature["feature"], s["low"], s["high"], s["rows"],
                         s["candidate_failures"], s["pairs"], s[key]])
    for feature in ranked[:PLOTTED_FEATURES]:
        labels = [f"d{i + 1}" for i in range(len(feature["slices"]))]
        if key == "agreement":
            values = [None if s[key] is None else 1 - s[key] for s in feature["slices"]]
            plots.append(bars(f"{feature['feature']}: disagreement by decile", labels,
                              values, top=max([v or 0.0 for v in values] + [0.05])))
        else:
            values = [s[key] for s in feature["slices"]]
            plots.append(bars(f"{feature['feature']}: mean |diff| by decile", labels,
                              values, top=max([v or 0.0 for v in values] + [1e-9])))
        fails = [s["candidate_failures"] / s["rows"] if s["rows"] else None
                 for s in feature["slices"]]
        if any(fails):
            plots.append(bars(f"{feature['feature']}: candidate failures by decile", labels,
                              fails))
    return ("<h2>By decile of each input feature</h2>"
            "<p>Features with the widest spread between their deciles are drawn first.</p>"
            f'<div class="plots">{"".join(plots)}</div>'
            + table("slices", ["feature", "from", "to", "rows", "candidate failures", "pairs",
                               key.replace("_", " ")], rows))


def _spread(parts: list[dict[str, Any]], key: str) -> float:
    values = [s[key] for s in parts if s[key] is not None]
    fails = [s["candidate_failures"] / s["rows"] for s in parts if s["rows"]]
    spread = max(values) - min(values) if values else 0.0
    return max(spread, max(fails) - min(fails) if fails else 0.0)


def render(report: dict[str, Any]) -> str:
    title = (f"Replay of {report['model']} version {report['candidate']['version']} against "
             f"version {report['baseline']['version']}")
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{escape(title)}</h1>" + _gates(report) + _answers(report)
            + _summary(report) + _cost_and_drift(report) + _slices(report)
            + "</body></html>\n")
