"""docker-compose.yml: valid against the Compose specification (what `docker compose` v2
reads) and for `docker-compose` v1.29 where it is installed, consistent with the
Dockerfile, the services' ports and the variables their config reads; secrets as files.

No Docker engine is needed: `make compose-check` runs the file for real."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from actorq.config import load
from commands import attach
from deploy import (
    ROOT,
    SERVICES,
    TOKENS_OF,
    check_token_roles,
    deploy_script,
    dockerfile_stages,
    env_vars_read_by,
    environment,
    healthcheck_address,
    image_env,
    interpolate,
    load_compose,
    service_config,
)

SCHEMA = json.loads((Path(__file__).parent / "data" / "compose-spec.json").read_text())
SECRETS_SCRIPT = ROOT / "deploy" / "compose-secrets.sh"
LONG_RUNNING = ("redis", *SERVICES)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose({})


@pytest.fixture
def secrets(tmp_path: Path) -> Path:
    """What deploy/compose-secrets.sh writes, in a temporary folder."""
    subprocess.run([str(SECRETS_SCRIPT), str(tmp_path / "s")], check=True, capture_output=True)
    return tmp_path / "s"


def test_the_compose_file_is_valid_against_the_compose_spec(compose: dict[str, Any]) -> None:
    jsonschema.validate(compose, SCHEMA, cls=jsonschema.Draft201909Validator)


def test_the_schema_check_catches_a_misspelled_key(compose: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(compose))
    broken["services"]["actor"]["deploy"]["replica"] = 2
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA, cls=jsonschema.Draft201909Validator)


def test_docker_compose_1_29_accepts_the_file(tmp_path: Path, secrets: Path) -> None:
    # `docker-compose config` validates with v1's own schema; it needs no engine.
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose (v1) not installed: the Compose-spec schema check stands")
    result = subprocess.run(
        [binary, "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "ACTORQ_SECRETS_DIR": str(secrets)},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert set(resolved["services"]) == set(load_compose({})["services"])


def test_actor_replicas_come_from_actorq_actors(compose: dict[str, Any]) -> None:
    assert compose["services"]["actor"]["deploy"]["replicas"] == 2  # compose casts it
    assert load_compose({"ACTORQ_ACTORS": "8"})["services"]["actor"]["deploy"]["replicas"] == 8


def test_interpolation_follows_compose_rules() -> None:
    env = {"A": "x", "E": ""}
    assert interpolate("${A}-${B:-d}-${E:-e}-${E-f}-$$A-$A", env) == "x-d-e--$A-x"


def test_every_service_builds_its_dockerfile_target_and_names_its_image_after_it(
    compose: dict[str, Any],
) -> None:
    stages = dockerfile_stages()
    for name, svc in compose["services"].items():
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (ROOT / svc["build"]["context"] / svc["build"]["dockerfile"]).exists()
        target = svc["build"]["target"]
        assert target == name and target in stages
        assert svc["image"].partition(":")[0] == f"actorq-{target}"


def test_the_compose_check_runs_the_images_compose_builds(compose: dict[str, Any]) -> None:
    compose_check = deploy_script("compose_check")
    assert set(compose_check.IMAGES) == {svc["image"] for svc in compose["services"].values()}


def test_the_learner_image_can_take_torch_from_a_wheelhouse(compose: dict[str, Any]) -> None:
    args = compose["services"]["learner"]["build"]["args"]
    assert args["TORCH_WHEELHOUSE"] == "deploy/wheelhouse"
    built = load_compose({"ACTORQ_TORCH_WHEELHOUSE": ".wheelhouse"})
    assert built["services"]["learner"]["build"]["args"]["TORCH_WHEELHOUSE"] == ".wheelhouse"


def test_every_actorq_variable_set_is_one_the_service_reads(compose: dict[str, Any]) -> None:
    stages = dockerfile_stages()
    for service in SERVICES:
        env = {**image_env(stages, service), **environment(compose["services"][service])}
        unknown = {k for k in env if k.startswith("ACTORQ_")} - env_vars_read_by(service)
        assert not unknown, f"{service} is given {unknown}, which it never reads"


def test_each_service_environment_loads_into_its_config(
    compose: dict[str, Any], secrets: Path
) -> None:
    stages = dockerfile_stages()
    for service in SERVICES:
        env = {**image_env(stages, service), **environment(compose["services"][service])}
        config_file = env.pop("ACTORQ_CONFIG", None)
        if config_file is not None:
            config_file = str(secrets / Path(config_file).name)
        cfg: Any = load(service_config(service), section=service, env=env, file=config_file)
        assert cfg.host == "0.0.0.0"


def test_the_replay_reads_its_store_url_from_a_secret_file(
    compose: dict[str, Any], secrets: Path
) -> None:
    replay = compose["services"]["replay"]
    config_file = environment(replay)["ACTORQ_CONFIG"]
    assert config_file == "/run/secrets/replay.yaml" and "replay.yaml" in replay["secrets"]
    password = (secrets / "redis-password").read_text()
    env = environment(replay)
    env.pop("ACTORQ_CONFIG")
    cfg: Any = load(
        service_config("replay"), section="replay", env=env, file=secrets / "replay.yaml"
    )
    assert cfg.store == f"redis://:{password}@redis:6379/0"


def test_redis_takes_its_password_from_the_secret_file_not_argv_or_environment(
    compose: dict[str, Any],
) -> None:
    redis = compose["services"]["redis"]
    script = redis["command"][-1]
    assert "redis-server -" in script  # the config, password line included, on stdin
    assert "requirepass $(cat /run/secrets/redis-password)" in script
    assert "redis-password" in redis["secrets"]
    assert "$(cat /run/secrets/redis-password)" in redis["healthcheck"]["test"][1]


def test_secrets_are_files_and_no_environment_holds_one(compose: dict[str, Any]) -> None:
    # Environment variables show in `docker inspect`; mounted files do not.
    for name, secret in compose["secrets"].items():
        assert secret["file"] == f"./.secrets/{name}", name
    for name, svc in compose["services"].items():
        for key, value in environment(svc).items():
            assert "redis://" not in value and "PASSWORD" not in key, (name, key)
    assert load_compose({"ACTORQ_SECRETS_DIR": "/elsewhere"})["secrets"]["redis-password"][
        "file"
    ] == ("/elsewhere/redis-password")


def test_the_secrets_script_keeps_a_password_and_rewrites_the_replay_file(secrets: Path) -> None:
    password = (secrets / "redis-password").read_text()
    assert len(password) == 48 and password.isalnum()
    (secrets / "replay.yaml").unlink()
    subprocess.run([str(SECRETS_SCRIPT), str(secrets)], check=True, capture_output=True)
    assert (secrets / "redis-password").read_text() == password
    assert password in (secrets / "replay.yaml").read_text()
    assert secrets.stat().st_mode & 0o077 == 0


def test_each_container_holds_only_its_roles_tokens_as_secret_files(
    compose: dict[str, Any],
) -> None:
    for name, roles in TOKENS_OF.items():
        svc = compose["services"][name]
        given = {k: v for k, v in environment(svc).items() if k.startswith("ACTORQ_TOKEN")}
        assert given == {f"ACTORQ_TOKEN_{r.upper()}_FILE": f"/run/secrets/token-{r}" for r in roles}
        assert {s for s in svc["secrets"] if s.startswith("token-")} == {
            f"token-{r}" for r in roles
        }
    for role in ("learner", "actor", "reader"):
        assert compose["secrets"][f"token-{role}"]["file"] == f"./.secrets/token-{role}"


def test_with_the_tokens_the_script_writes_every_caller_is_admitted_where_it_calls(
    compose: dict[str, Any], secrets: Path
) -> None:
    """The tokens and the roles fit together: the learner may publish and sample, actors
    insert and pull models, the coordinator read; an actor's token cannot publish."""
    token_env = {
        name: {
            k: v.replace("/run/secrets", str(secrets))
            for k, v in environment(compose["services"][name]).items()
            if k.startswith("ACTORQ_TOKEN")
        }
        for name in TOKENS_OF
    }
    check_token_roles(token_env)
    tokens = {(secrets / f"token-{r}").read_text() for r in ("learner", "actor", "reader")}
    assert len(tokens) == 3 and all(len(t) == 64 for t in tokens)
    # Kept when the script runs again (containers hold them); the folder stays private.
    subprocess.run([str(SECRETS_SCRIPT), str(secrets)], check=True, capture_output=True)
    assert {(secrets / f"token-{r}").read_text() for r in ("learner", "actor", "reader")} == tokens


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


def test_startup_waits_on_health_not_on_sleeps(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert cond["condition"] == "service_healthy", (name, dep)
            assert "healthcheck" in compose["services"][dep], dep
        for key in ("command", "entrypoint"):
            assert "sleep" not in json.dumps(svc.get(key, "")), (name, key)


def test_crashed_services_restart_and_the_finished_coordinator_does_not(
    compose: dict[str, Any],
) -> None:
    for name in LONG_RUNNING:
        assert compose["services"][name]["restart"] == "unless-stopped", name
    assert compose["services"]["coordinator"]["restart"] == "no"
    # An init as PID 1 forwards signals and reaps; the service process under it can crash.
    assert all(svc["init"] is True for svc in compose["services"].values())


def test_every_service_has_cpu_and_memory_limits(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        limits = svc["deploy"]["resources"]["limits"]
        assert {"cpus", "memory"} <= set(limits), name
    assert compose["services"]["actor"]["deploy"]["resources"]["limits"]["cpus"] == "1"


def test_redis_keeps_an_append_only_file_in_a_named_volume(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert "--appendonly yes" in redis["command"][-1]
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
    ignored = (ROOT / ".gitignore").read_text().split()
    assert ".env" in ignored and ".secrets/" in ignored and ".wheelhouse/" in ignored
    example = (ROOT / "deploy" / "compose.env.example").read_text()
    assert "PASSWORD" not in example
    tracked = subprocess.run(
        ["git", "ls-files", ".secrets", ".env"], capture_output=True, text=True, cwd=ROOT
    ).stdout
    assert tracked == ""
