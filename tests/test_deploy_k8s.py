"""deploy/k8s: each overlay renders (kustomize, in Python) into manifests that the
Kubernetes schemas accept and that agree with the images, ports and config system."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from deploy import K8S, SERVICES, dockerfile_stages, env_vars_read_by, render

OVERLAYS = ("dev", "paper")
K8S_VERSION = "1.30.0"  # oldest we claim: native gRPC probes are GA since 1.27
PORTS = {"replay": 50051, "quantizer": 50052, "learner": 50053, "actor": 50054}


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def workloads(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {**by_kind(docs, "Deployment"), **by_kind(docs, "StatefulSet")}


def container(doc: dict[str, Any]) -> dict[str, Any]:
    (c,) = doc["spec"]["template"]["spec"]["containers"]
    return c


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(K8S / "overlays" / request.param)


def test_every_manifest_is_valid_against_the_kubernetes_schemas(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _name, docs = rendered
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_python_renderer_matches_kubectl_kustomize_where_kubectl_exists(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    name, docs = rendered
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: the Python renderer alone was checked")
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / name)], capture_output=True, check=True
    ).stdout
    theirs = [d for d in yaml.safe_load_all(out) if d]

    def key(d: dict[str, Any]) -> tuple[str, str]:
        return d["kind"], d["metadata"]["name"]

    assert sorted(theirs, key=key) == sorted(docs, key=key)


def test_every_service_runs_the_image_of_its_dockerfile_target(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _name, docs = rendered
    stages = dockerfile_stages()
    for service in SERVICES:
        image = container(workloads(docs)[service])["image"]
        repo, _, tag = image.partition(":")
        assert repo == f"actorq-{service}" and tag, image
        assert stages[service].last("ENTRYPOINT") == f'["actorq", "serve", "{service}"]'


def test_probes_are_grpc_health_checks_on_the_port_the_service_listens_on(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _name, docs = rendered
    configs = by_kind(docs, "ConfigMap")
    for service in SERVICES:
        c = container(workloads(docs)[service])
        port = int(configs[f"{service}-config"]["data"]["ACTORQ_PORT"])
        assert port == PORTS[service]
        assert {"name": "grpc", "containerPort": port} in c["ports"]
        assert c["readinessProbe"]["grpc"] == {"port": port}
        assert c["livenessProbe"]["grpc"] == {"port": port}


def test_services_select_their_pods_and_target_the_grpc_port(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _name, docs = rendered
    for name, svc in by_kind(docs, "Service").items():
        pod_labels = workloads(docs)[name]["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= pod_labels.items()
    # Replay may run replicas behind client-side round robin: it must be headless.
    assert by_kind(docs, "Service")["replay"]["spec"]["clusterIP"] == "None"


def test_addresses_name_the_services_and_their_ports(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _name, docs = rendered
    configs = by_kind(docs, "ConfigMap")
    services = by_kind(docs, "Service")
    for client in ("learner", "actor"):
        data = configs[f"{client}-config"]["data"]
        for target in ("replay", "quantizer"):
            address = data[f"ACTORQ_{target.upper()}_ADDRESS"].removeprefix("dns:///")
            host, _, port = address.rpartition(":")
            assert host == target
            assert int(port) == services[target]["spec"]["ports"][0]["port"] == PORTS[target]


def test_every_actorq_variable_set_is_one_the_service_reads(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _name, docs = rendered
    configs = by_kind(docs, "ConfigMap")
    for service in SERVICES:
        c = container(workloads(docs)[service])
        names = set(configs[f"{service}-config"]["data"])
        names |= {e["name"] for e in c.get("env", [])}
        unknown = {n for n in names if n.startswith("ACTORQ_")} - env_vars_read_by(service)
        assert not unknown, f"{service} is given {unknown}, which it never reads"


def test_actors_take_one_core_and_every_pod_is_scraped_and_non_root(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _name, docs = rendered
    actor = container(workloads(docs)["actor"])
    assert actor["resources"]["requests"]["cpu"] == actor["resources"]["limits"]["cpu"] == "1"
    for service in SERVICES:
        template = workloads(docs)[service]["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        port = int(annotations["prometheus.io/port"])
        assert {"name": "metrics", "containerPort": port} in container(workloads(docs)[service])[
            "ports"
        ]
        assert template["spec"]["securityContext"]["runAsNonRoot"] is True
        assert template["spec"]["securityContext"]["runAsUser"] != 0


def test_the_redis_password_is_referenced_never_contained(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _name, docs = rendered
    assert not by_kind(docs, "Secret")
    text = yaml.safe_dump_all(docs)
    assert "requirepass" in text and "secretKeyRef" in text
    replay = container(workloads(docs)["replay"])
    env = {e["name"]: e for e in replay["env"]}
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "actorq-redis"
    assert "$(REDIS_PASSWORD)" in env["ACTORQ_STORE"]["value"]


def test_redis_keeps_an_append_only_file_on_a_volume_claim(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _name, docs = rendered
    redis = by_kind(docs, "StatefulSet")["redis"]
    args = container(redis)["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    learner = by_kind(docs, "StatefulSet")["learner"]
    assert learner["spec"]["volumeClaimTemplates"], "the learner's checkpoints need a PVC"


def test_the_overlays_differ_where_they_should() -> None:
    dev, paper = (render(K8S / "overlays" / o) for o in OVERLAYS)
    assert workloads(dev)["actor"]["spec"]["replicas"] == 2
    assert workloads(paper)["actor"]["spec"]["replicas"] == 32
    learner = by_kind(paper, "ConfigMap")["learner-config"]["data"]
    assert learner["ACTORQ_DQN_HIDDEN_SIZES"] == "2048,2048,2048"
    assert learner["ACTORQ_ENV"] == "CartPole-v1"  # merged, not replaced


def test_the_paper_settings_load_into_the_service_configs() -> None:
    from actorq.config import load
    from deploy import service_config

    configs = by_kind(render(K8S / "overlays" / "paper"), "ConfigMap")
    for service in ("replay", "quantizer", "learner"):
        env = dict(configs[f"{service}-config"]["data"])
        if service == "replay":
            env["ACTORQ_STORE"] = "redis://:pw@redis:6379/0"
        cfg = load(service_config(service), section=service, env=env)
        assert cfg.port == PORTS[service]
    assert load(
        service_config("learner"), env=configs["learner-config"]["data"]
    ).dqn.hidden_sizes == [
        2048,
        2048,
        2048,
    ]


def test_the_renderer_refuses_a_kustomize_feature_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\nhelmCharts: []\n")
    with pytest.raises(ValueError, match="helmCharts"):
        render(tmp_path)
