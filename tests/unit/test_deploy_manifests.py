"""deploy/kubernetes and the Dockerfile keep their security settings: non-root, read-only root
filesystem, no privilege escalation, no capabilities, the delivery port reachable only from
routers and edges, internal auth wired from Secrets (and no Secret committed)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"


def documents() -> list[dict]:
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def deployments() -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in documents() if d["kind"] == "Deployment"}


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def test_every_pod_runs_non_root_read_only_without_privileges():
    pods = deployments()
    assert set(pods) == {"pushplat-api", "pushplat-edge", "pushplat-router"}
    for name, deployment in pods.items():
        spec = deployment["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] == 10001, name
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"], name


def test_routers_and_edges_authenticate_each_other_with_a_secret_reference():
    pods = deployments()
    for name in ("pushplat-edge", "pushplat-router"):
        env = env_of(pods[name]["spec"]["template"]["spec"]["containers"][0])
        ref = env["PUSHPLAT_INTERNAL_SECRET"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "pushplat-secrets", "key": "internal-secret"}, name
    assert not [d for d in documents() if d["kind"] == "Secret"], "no Secret may be committed"


def test_public_ports_serve_tls_and_probes_use_the_plaintext_health_port():
    pods = deployments()
    for name in ("pushplat-edge", "pushplat-api"):
        container = pods[name]["spec"]["template"]["spec"]["containers"][0]
        env = env_of(container)
        assert env["PUSHPLAT_TLS_CERT"]["value"].startswith("/etc/pushplat/tls/"), name
        assert container["readinessProbe"]["grpc"]["port"] == int(env["PUSHPLAT_HEALTH_PORT"]["value"]), name


def test_only_routers_and_edges_reach_the_delivery_port():
    policies = {d["metadata"]["name"]: d for d in documents() if d["kind"] == "NetworkPolicy"}
    deny = policies["pushplat-default-deny-ingress"]["spec"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"] and "ingress" not in deny
    edge = policies["pushplat-edge"]["spec"]
    rules = [r for r in edge["ingress"] if any(p["port"] == 50053 for p in r["ports"])]
    assert len(rules) == 1
    allowed = {peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for peer in rules[0]["from"]}
    assert allowed == {"router", "edge"}
    assert all(set(peer) == {"podSelector"} for peer in rules[0]["from"]), "no namespace or IP peers"


def test_the_image_runs_as_a_numeric_non_root_user():
    users = re.findall(r"^USER\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert users == ["10001:10001"]
