"""playbooks/kubernetes.yml renders manifests that validate offline against the
OpenAPI schemas of two Kubernetes minor versions, and keep the relations that
matter: the grace period covers the drain, probes, ports, affinity."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# Two minor versions, both bundled in kubernetes-validate (no network).
KUBERNETES_VERSIONS = ["1.32.0", "1.35.0"]
# Custom resources of the Prometheus Operator: no OpenAPI schema in Kubernetes.
OPERATOR_KINDS = {"PrometheusRule", "ServiceMonitor"}


def render(folder: Path, *extra: str) -> dict[str, dict[str, Any]]:
    """Run the playbook on the lab inventory (no vault password); manifests by kind."""
    ansible_playbook = Path(sys.executable).parent / "ansible-playbook"
    result = subprocess.run(
        [
            str(ansible_playbook),
            "-i",
            "inventories/lab",
            "playbooks/kubernetes.yml",
            "-e",
            f"wsfleet_kubernetes_dir={folder}",
            *extra,
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    documents = [yaml.safe_load(path.read_text()) for path in sorted(folder.glob("*.yaml"))]
    return {document["kind"]: document for document in documents}


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    return render(tmp_path_factory.mktemp("kubernetes"))


def lab_vars() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "inventories/lab/group_vars/all/main.yml").read_text())


def test_everything_the_issue_lists_is_rendered(manifests: dict[str, dict[str, Any]]) -> None:
    assert set(manifests) == {
        "Namespace",
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "Ingress",
        "PodDisruptionBudget",
        "PrometheusRule",
        "ServiceMonitor",
    }


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_validate_against_the_openapi_schema(manifests: dict[str, dict[str, Any]], version: str) -> None:
    for kind, document in manifests.items():
        if kind in OPERATOR_KINDS:
            continue
        kubernetes_validate.validate(document, version, strict=True)


def test_an_invalid_manifest_is_rejected() -> None:
    """The validation can fail: a Deployment with a misspelt field."""
    document = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "replica": 1,
            "selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": []}},
        },
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(document, KUBERNETES_VERSIONS[0], strict=True)


def test_grace_period_covers_prestop_drain_spread_and_timeout(manifests: dict[str, dict[str, Any]]) -> None:
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    settings = manifests["ConfigMap"]["data"]["wsfleet.toml"]
    drain = {line.split("=")[0].strip(): line.split("=")[1].strip() for line in settings.splitlines() if "=" in line}
    prestop = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    margin = 5
    assert pod["terminationGracePeriodSeconds"] >= int(drain["drain_spread"]) + int(drain["drain_timeout"]) + prestop + margin
    assert prestop >= 1


def test_probes_ports_and_security(manifests: dict[str, dict[str, Any]]) -> None:
    container = manifests["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["httpGet"]["path"] == "/live"
    port = container["ports"][0]
    assert port["containerPort"] == 8000 and port["name"] == "ws"
    assert "port = 8000" in manifests["ConfigMap"]["data"]["wsfleet.toml"]
    assert manifests["Service"]["spec"]["ports"][0]["targetPort"] == "ws"
    assert manifests["ServiceMonitor"]["spec"]["endpoints"][0] == {"port": "ws", "path": "/metrics", "interval": "15s"}
    pod_security = manifests["Deployment"]["spec"]["template"]["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["resources"]["requests"]["memory"] == container["resources"]["limits"]["memory"]
    spread = manifests["Deployment"]["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}


def test_affinity_and_websocket_timeouts(manifests: dict[str, dict[str, Any]]) -> None:
    assert manifests["Service"]["spec"]["sessionAffinity"] == "ClientIP"
    annotations = manifests["Ingress"]["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/affinity"] == "cookie"
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600
    assert manifests["Ingress"]["spec"]["ingressClassName"] == "nginx"


def test_secrets_come_from_the_inventory(manifests: dict[str, dict[str, Any]]) -> None:
    data = manifests["Secret"]["data"]
    assert base64.b64decode(data["redis_password"]).decode() == lab_vars()["redis_pubsub_wsfleet_password"]
    assert "redis_password_file" in manifests["ConfigMap"]["data"]["wsfleet.toml"]
    assert lab_vars()["redis_pubsub_wsfleet_password"] not in manifests["ConfigMap"]["data"]["wsfleet.toml"]


def test_the_rules_are_the_monitoring_role_s(manifests: dict[str, dict[str, Any]]) -> None:
    rules = [rule for group in manifests["PrometheusRule"]["spec"]["groups"] for rule in group["rules"]]
    names = {rule["alert"] for rule in rules if "alert" in rule}
    assert {"WsfleetInstanceDown", "WsfleetRedisUnreachable", "WsfleetFanoutLatencyHigh"} <= names
    assert manifests["PrometheusRule"]["metadata"]["labels"]["release"] == "prometheus"


def test_drain_settings_follow_the_inventory(tmp_path: Path) -> None:
    manifests = render(tmp_path, "-e", "ws_server_drain_timeout=100", "-e", "ws_server_drain_spread=20")
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= 120
    assert "drain_timeout = 100" in manifests["ConfigMap"]["data"]["wsfleet.toml"]
