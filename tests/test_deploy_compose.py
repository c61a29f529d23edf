"""docker-compose.yml: valid against the Compose specification and consistent with the
Dockerfile, the services' ports and the variables their config reads.

No Docker engine runs here: this checks the file as compose would read it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from actorq.config import load
from commands import attach
from deploy import (
    ROOT,
    SERVICES,
    InterpolationError,
    dockerfile_stages,
    env_vars_read_by,
    environment,
    healthcheck_address,
    image_env,
    interpolate,
    load_compose,
)

SCHEMA = json.loads((Path(__file__).parent / "data" / "compose-spec.json").read_text())
ENV = {"ACTORQ_REDIS_PASSWORD": "test-password"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(ENV)


def test_the_compose_file_is_valid_against_the_compose_spec(compose: dict[str, Any]) -> None:
    jsonschema.validate(compose, SCHEMA, cls=jsonschema.Draft201909Validator)


def test_the_schema_check_catches_a_misspelled_key(compose: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(compose))
    broken["services"]["actor"]["deploy"]["replica"] = 2
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA, cls=jsonschema.Draft201909Validator)


def test_compose_refuses_to_start_without_a_redis_password() -> None:
    with pytest.raises(InterpolationError, match="ACTORQ_REDIS_PASSWORD"):
        load_compose({})


def test_actor_replicas_come_from_actorq_actors(compose: dict[str, Any]) -> None:
    assert compose["services"]["actor"]["deploy"]["replicas"] == 2  # compose casts it
    assert (
        load_compose({**ENV, "ACTORQ_ACTORS": "8"})["services"]["actor"]["deploy"]["replicas"] == 8
    )


def test_interpolation_follows_compose_rules() -> None:
    env = {"A": "x", "E": ""}
    assert interpolate("${A}-${B:-d}-${E:-e}-${E-f}-$$A-$A", env) == "x-d-e--$A-x"


def test_every_service_builds_its_dockerfile_target_and_names_its_image_after_it(
    compose: dict[str, Any],
) -> None:
    stages = dockerfile_stages()
    for name, svc in compose["services"].items():
        if name == "redis":
            continue
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (ROOT / svc["build"]["context"] / svc["build"]["dockerfile"]).exists()
        target = svc["build"]["target"]
        assert target == name and target in stages
        assert svc["image"].partition(":")[0] == f"actorq-{target}"


def test_every_actorq_variable_set_is_one_the_service_reads(compose: dict[str, Any]) -> None:
    stages = dockerfile_stages()
    for service in SERVICES:
        env = {**image_env(stages, service), **environment(compose["services"][service])}
        unknown = {k for k in env if k.startswith("ACTORQ_")} - env_vars_read_by(service)
        assert not unknown, f"{service} is given {unknown}, which it never reads"


def test_each_service_environment_loads_into_its_config(compose: dict[str, Any]) -> None:
    from deploy import service_config

    stages = dockerfile_stages()
    for service in SERVICES:
        env = {**image_env(stages, service), **environment(compose["services"][service])}
        cfg = load(service_config(service), section=service, env=env)
        assert cfg.host == "0.0.0.0"  # type: ignore[attr-defined]


def test_healthchecks_ask_the_grpc_health_service_on_the_listening_port(
    compose: dict[str, Any],
) -> None:
    for service in SERVICES:
        svc = compose["services"][service]
        port = environment(svc)["ACTORQ_PORT"]
        assert healthcheck_address(svc["healthcheck"]["test"]) == f"127.0.0.1:{port}"


def test_addresses_point_at_service_names_and_their_ports(compose: dict[str, Any]) -> None:
    services = compose["services"]
    ports = {s: environment(services[s])["ACTORQ_PORT"] for s in SERVICES}
    for client in ("learner", "actor"):
        env = environment(services[client])
        for target in ("replay", "quantizer"):
            assert env[f"ACTORQ_{target.upper()}_ADDRESS"] == f"{target}:{ports[target]}"
    store = environment(services["replay"])["ACTORQ_STORE"]
    assert store == "redis://:test-password@redis:6379/0"


def test_startup_waits_on_health_not_on_sleeps(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert cond["condition"] == "service_healthy", (name, dep)
            assert "healthcheck" in compose["services"][dep], dep
        for key in ("command", "entrypoint"):
            assert "sleep" not in json.dumps(svc.get(key, "")), (name, key)


def test_redis_keeps_an_append_only_file_in_a_named_volume(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert "--appendonly yes" in " ".join(redis["command"])
    volume = redis["volumes"][0].split(":")[0]
    assert volume in compose["volumes"]
    assert (
        compose["services"]["learner"]["volumes"] == compose["services"]["coordinator"]["volumes"]
    )


def test_the_coordinator_command_is_one_actorq_attach_accepts(compose: dict[str, Any]) -> None:
    svc = compose["services"]["coordinator"]
    args, addrs, report = attach.parse_args(svc["command"])
    services = compose["services"]
    assert addrs.learner == f"learner:{environment(services['learner'])['ACTORQ_PORT']}"
    assert args.env == environment(services["learner"])["ACTORQ_ENV"]
    assert args.precision == environment(services["actor"])["ACTORQ_PRECISION"] == "int8"
    assert args.target_return == 475
    assert report
    run_volume = svc["volumes"][0].split(":")[1]
    assert args.out.startswith(run_volume + "/")


def test_no_secret_is_committed() -> None:
    assert not (ROOT / ".env").exists() or ".env" in (ROOT / ".gitignore").read_text()
    example = (ROOT / "deploy" / "compose.env.example").read_text()
    assert "ACTORQ_REDIS_PASSWORD=change-me" in example
    assert "test-password" not in (ROOT / "docker-compose.yml").read_text()
