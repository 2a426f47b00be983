"""deploy/: the Prometheus rules pass promtool, the Grafana dashboard's queries parse as
PromQL (promtool again, as recording rules), and every metric either names is one a real
gateway exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from conftest import ROOT, Server

RULES = ROOT / "deploy" / "prometheus" / "alerts.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "canarygate.json"
METRIC = re.compile(r"\bcanarygate_[a-z0-9_]+")
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum"),
            "gauge": ("",), "summary": ("_count", "_sum"), "unknown": ("",)}


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: `make test` installs Debian's prometheus package"
    return found


def dashboard_exprs() -> list[str]:
    dash: dict[str, Any] = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [a["expr"] for a in dash["annotations"]["list"]]
    return exprs


def rule_exprs() -> list[str]:
    rules = yaml.safe_load(RULES.read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def test_alert_rules_pass_promtool() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    assert alerts == {"CanarygateRollbackHappened", "CanarygateRolloutPaused",
                      "CanarygateDriftAlert", "CanarygateDatasetDroppingRecords",
                      "CanarygateFeedbackJoinFailing"}


def test_dashboard_queries_are_promql(tmp_path: Path) -> None:
    """Each panel's query as a recording rule, with Grafana's variables filled in, so promtool
    parses it as Prometheus would."""
    exprs = [e.replace("$model", ".*") for e in dashboard_exprs()]
    assert len(exprs) >= 15
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def exported(server: Server) -> set[str]:
    """Every sample name the gateway's /metrics can carry: each family's, with its type's
    suffixes (a labelled family with no children yet still has its HELP and TYPE)."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    names = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + s for s in SUFFIXES[family.type])
    return names


def test_every_metric_named_is_exported(demo_server: Server) -> None:
    names = exported(demo_server)
    used = {m for e in dashboard_exprs() + rule_exprs() for m in METRIC.findall(e)}
    assert len(used) >= 15
    assert used - names == set(), f"not exported by the gateway: {sorted(used - names)}"
    # The check can fail: a misspelt name is caught.
    assert "canarygate_rollout_weights" not in names
