"""deploy/: the Kubernetes manifests validate against Kubernetes' own schemas (the
kubernetes-validate package, offline, strict: an unknown field fails), and the gateway config
they and the compose file carry is one canarygate itself accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from canarygate.config import parse_config
from conftest import MODELS, ROOT

DEPLOY = ROOT / "deploy"
KUBERNETES_VERSION = "1.30.0"


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def manifests() -> list[tuple[str, dict[str, Any]]]:
    return [(f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc)
            for path in sorted((DEPLOY / "kubernetes").glob("*.yaml"))
            for doc in documents(path)]


@pytest.mark.parametrize(("name", "doc"), manifests(), ids=[n for n, _ in manifests()])
def test_each_manifest_is_valid_kubernetes(name: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_a_wrong_field_would_be_caught() -> None:
    """The check can fail: a misspelt probe field is refused."""
    _, deployment = next((n, d) for n, d in manifests() if d["kind"] == "Deployment"
                         and d["metadata"]["name"] == "canarygate")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["httpGett"] = container["readinessProbe"].pop("httpGet")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def gateway_config(text: str) -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load(text)
    parse_config(raw)  # canarygate's own validation (ConfigError naming the key)
    for model in raw["models"]:
        for version in model["versions"].values():
            assert (MODELS / version["path"] / "model.onnx").is_file(), version
    return raw


def test_the_kubernetes_gateway_shares_one_rollout_through_redis() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for _, d in manifests()}
    config = gateway_config(docs["ConfigMap", "canarygate-config"]["data"]["gateway.yaml"])
    assert config["state"]["backend"] == "redis"
    gateway = docs["Deployment", "canarygate"]["spec"]
    assert gateway["replicas"] == 3
    container = gateway["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    env = {e["name"]: e for e in container["env"]}
    redis_service = docs["Service", "canarygate-redis"]
    assert env["CANARYGATE_REDIS_URL"]["value"] == (
        f"redis://{redis_service['metadata']['name']}:"
        f"{redis_service['spec']['ports'][0]['port']}/0")
    assert "--workers" in container["args"]
    assert docs["Service", "canarygate"]["spec"]["selector"] == (
        gateway["selector"]["matchLabels"])


def test_the_compose_file_runs_redis_and_a_gateway_of_workers() -> None:
    compose = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    redis, gateway = compose["services"]["redis"], compose["services"]["gateway"]
    assert "healthcheck" in redis
    assert gateway["depends_on"]["redis"]["condition"] == "service_healthy"
    assert gateway["environment"]["CANARYGATE_REDIS_URL"] == "redis://redis:6379/0"
    assert gateway["command"][gateway["command"].index("--workers") + 1] == "2"
    mounted = next(v.split(":")[0] for v in gateway["volumes"] if "gateway.yaml" in v)
    config = gateway_config((DEPLOY / "compose" / mounted).read_text())
    assert config["state"]["backend"] == "redis"
    assert (DEPLOY / "compose" / gateway["build"]["context"] / "Dockerfile").is_file()
    assert set(compose["volumes"]) == {v.split(":")[0] for s in compose["services"].values()
                                       for v in s.get("volumes", []) if not v.startswith(".")}
