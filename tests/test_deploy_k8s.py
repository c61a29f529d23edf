"""deploy/k8s: each overlay, rendered by `kubectl kustomize`, gives manifests that the
Kubernetes schemas accept and that agree with the images, ports and config system.

No cluster runs here: these check the manifests `kubectl apply -k` would send."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from commands import attach
from deploy import (
    K8S,
    SERVICES,
    TOKENS_OF,
    check_token_roles,
    dockerfile_stages,
    env_vars_read_by,
    load_compose,
    render,
)

OVERLAYS = ("dev", "paper")
K8S_VERSION = "1.30.0"  # oldest we claim: native gRPC probes are GA since 1.27
PORTS = {"replay": 50051, "quantizer": 50052, "learner": 50053, "actor": 50054}
REDIS_PORT, METRICS_PORT = 6379, 9100


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def workloads(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Deployments, StatefulSets and Jobs by name."""
    return {**by_kind(docs, "Deployment"), **by_kind(docs, "StatefulSet"), **by_kind(docs, "Job")}


def container(doc: dict[str, Any]) -> dict[str, Any]:
    (c,) = doc["spec"]["template"]["spec"]["containers"]
    return c


def pod_labels(doc: dict[str, Any]) -> dict[str, str]:
    return doc["spec"]["template"]["metadata"]["labels"]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(K8S / "overlays" / request.param)


def test_every_manifest_is_valid_against_the_kubernetes_schemas(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _name, docs = rendered
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


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


def test_the_images_are_the_ones_compose_builds(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    # `make compose-check` builds and runs exactly compose's images.
    _name, docs = rendered
    compose = load_compose({})
    built = {svc["image"] for svc in compose["services"].values()}
    used = {c["image"] for doc in workloads(docs).values() for c in all_containers(doc)}
    assert used == built


def all_containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def test_every_container_has_cpu_and_memory_requests_and_limits(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _name, docs = rendered
    for name, doc in workloads(docs).items():
        for c in all_containers(doc):
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), (name, c["name"], kind)


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
        assert svc["spec"]["selector"].items() <= pod_labels(workloads(docs)[name]).items()
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


def test_the_coordinator_job_follows_the_services_and_keeps_its_results(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _name, docs = rendered
    job = by_kind(docs, "Job")["coordinator"]
    c = container(job)
    assert c["image"].startswith("actorq-coordinator:")
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    args, addrs, report = attach.parse_args(c["args"])
    assert report and args.precision == "int8" and args.target_return == 475
    for service, address in (
        ("replay", addrs.replay),
        ("quantizer", addrs.quantizer),
        ("learner", addrs.learner),
    ):
        assert address.removeprefix("dns:///") == f"{service}:{PORTS[service]}"
    (mount,) = [m for m in c["volumeMounts"] if m["name"] != "tokens"]
    assert args.out.startswith(mount["mountPath"] + "/")
    (volume,) = [
        v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]
    ]
    assert volume["persistentVolumeClaim"]["claimName"] in by_kind(docs, "PersistentVolumeClaim")
    # The compose coordinator and the Job run the same run.
    compose_args, _a, _r = attach.parse_args(load_compose({})["services"]["coordinator"]["command"])
    assert (compose_args.env, compose_args.algo, compose_args.max_env_steps) == (
        args.env,
        args.algo,
        args.max_env_steps,
    )


# ------------------------------------------------------------------- network policies


def admitted(docs: list[dict[str, Any]], target: str, port: int) -> set[str]:
    """Names of the ActorQ pods some NetworkPolicy lets connect to target's port, plus
    'other:<selector>' for any peer that is not an ActorQ pod of this namespace."""
    names = {pod_labels(d)["app.kubernetes.io/name"] for d in workloads(docs).values()}
    found: set[str] = set()
    labels = pod_labels(workloads(docs)[target])
    for policy in by_kind(docs, "NetworkPolicy").values():
        if not selects(policy["spec"]["podSelector"], labels):
            continue
        for rule in policy["spec"].get("ingress", []):
            if rule.get("ports") and port not in [p["port"] for p in rule["ports"]]:
                continue
            for peer in rule.get("from", [{"everyone": True}]):
                if set(peer) != {"podSelector"}:
                    found.add(f"other:{peer}")
                    continue
                pod = peer["podSelector"]
                found |= {n for n in names if selects(pod, {"app.kubernetes.io/name": n})}
    return found


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        assert expr["operator"] == "In", expr  # the only operator our policies use
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def test_ingress_is_denied_unless_a_policy_admits_it(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _name, docs = rendered
    deny = by_kind(docs, "NetworkPolicy")["default-deny-ingress"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}


def test_each_port_admits_only_the_actorq_pods_that_call_it(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _name, docs = rendered
    assert admitted(docs, "redis", REDIS_PORT) == {"replay"}
    assert admitted(docs, "replay", PORTS["replay"]) == {"actor", "learner", "coordinator"}
    assert admitted(docs, "quantizer", PORTS["quantizer"]) == {"actor", "learner", "coordinator"}
    assert admitted(docs, "learner", PORTS["learner"]) == {"coordinator"}
    assert admitted(docs, "actor", PORTS["actor"]) == set()


def test_metrics_are_open_only_to_pods_labelled_as_scrapers(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _name, docs = rendered
    for service in SERVICES:
        (peer,) = admitted(docs, service, METRICS_PORT)
        assert "actorq.io/metrics-scraper" in peer, peer
    assert not {p for p in admitted(docs, "redis", METRICS_PORT) if p.startswith("other")}


# ---------------------------------------------------------------- config, security


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
    for name, doc in workloads(docs).items():
        security = doc["spec"]["template"]["spec"]["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] != 0, name


def test_each_pod_mounts_only_its_roles_tokens_from_the_secret(
    rendered: tuple[str, list[dict[str, Any]]], tmp_path: Any
) -> None:
    _name, docs = rendered
    for role in ("learner", "actor", "reader"):  # the Secret's keys, as files here
        (tmp_path / role).write_text(f"{role}-token-{'x' * 32}")
    token_env = {}
    for name, roles in TOKENS_OF.items():
        workload = workloads(docs)[name]
        c = container(workload)
        (mount,) = [m for m in c["volumeMounts"] if m["name"] == "tokens"]
        (volume,) = [
            v for v in workload["spec"]["template"]["spec"]["volumes"] if v["name"] == "tokens"
        ]
        assert mount["readOnly"] is True
        assert volume["secret"]["secretName"] == "actorq-tokens"
        assert volume["secret"]["defaultMode"] == 0o440
        assert [i["key"] for i in volume["secret"]["items"]] == list(roles), name
        env = {e["name"]: e["value"] for e in c["env"] if e["name"].startswith("ACTORQ_TOKEN")}
        assert env == {f"ACTORQ_TOKEN_{r.upper()}_FILE": f"{mount['mountPath']}/{r}" for r in roles}
        token_env[name] = {k: v.replace(mount["mountPath"], str(tmp_path)) for k, v in env.items()}
    check_token_roles(token_env)


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
        cfg: Any = load(service_config(service), section=service, env=env)
        assert cfg.port == PORTS[service]
    assert load(
        service_config("learner"), env=configs["learner-config"]["data"]
    ).dqn.hidden_sizes == [
        2048,
        2048,
        2048,
    ]
