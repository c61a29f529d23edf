"""Readers of deploy/ for the tests: the compose file as compose interpolates it, the
Dockerfile's stages, the env vars each service reads, and the Kubernetes manifests as
`kubectl kustomize` renders them.

No Docker engine or cluster is needed: these read the files the way `docker compose` and
`kubectl apply -k` would. `make compose-check` (deploy/compose_check.py) runs them.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from actorq import auth, config, metrics, tls

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
K8S = ROOT / "deploy" / "k8s"
SERVICES = ("replay", "quantizer", "learner", "actor")

# ------------------------------------------------------------------ env vars


def service_config(service: str) -> type:
    """The config dataclass `actorq serve SERVICE` loads."""
    if service == "replay":
        from services.replay.config import ReplayConfig

        return ReplayConfig
    if service == "quantizer":
        from services.quantizer.config import QuantizerConfig

        return QuantizerConfig
    if service == "learner":
        from services.learner.config import LearnerConfig

        return LearnerConfig
    from services.actor.config import ActorConfig

    return ActorConfig


# Read outside the config dataclasses, by every service process.
PROCESS_ENV_VARS = {
    config.ENV_PREFIX + "CONFIG",
    metrics.METRICS_PORT_ENV,
    metrics.METRICS_HOST_ENV,
    *tls.ENV_VARS,
    *auth.ENV_VARS,
}


def env_vars_read_by(service: str) -> set[str]:
    """Every ACTORQ_* variable `actorq serve SERVICE` reads."""
    leaves = config.leaves(service_config(service))
    names = {config.ENV_PREFIX + dotted.replace(".", "_").upper() for dotted, _f, _t in leaves}
    return names | PROCESS_ENV_VARS


# -------------------------------------------------------------------- tokens

# The tokens each ActorQ container holds in compose and Kubernetes (README, "Authentication
# and roles"): servers the roles they admit, clients their own role's and the reader's.
TOKENS_OF = {
    "replay": ("learner", "actor", "reader"),
    "quantizer": ("learner", "actor", "reader"),
    "learner": ("learner", "reader"),
    "actor": ("actor", "reader"),
    "coordinator": ("reader",),
}
# Who calls what: caller -> (the role its channels present, [(server, method name)]).
CALLS = {
    "learner": ("learner", [("replay", "Sample"), ("replay", "UpdatePriorities"),
                            ("replay", "GetStats"), ("quantizer", "PublishWeights"),
                            ("quantizer", "ListModels")]),
    "actor": ("actor", [("replay", "Insert"), ("quantizer", "GetModel")]),
    "coordinator": (None, [("replay", "GetStats"), ("quantizer", "ListModels"),
                           ("quantizer", "GetModel"), ("learner", "GetStatus")]),
}  # fmt: skip


def method(server: str, name: str) -> str:
    """The full gRPC name of a method of a server (``/actorq.v1.ReplayService/Insert``)."""
    (full,) = [m for m in auth.POLICY if m.endswith(f".{server.capitalize()}Service/{name}")]
    return full


def check_token_roles(token_env: Mapping[str, Mapping[str, str]]) -> None:
    """With each container's token variables (files readable here), every caller is admitted
    for every call it makes, and no actor token may publish weights or touch priorities."""
    accepted = {s: auth.accepted_tokens(token_env[s]) for s in ("replay", "quantizer", "learner")}
    for caller, (role, calls) in CALLS.items():
        token = auth.client_token(token_env[caller], role)
        assert token, caller
        for server, name in calls:
            tokens = accepted[server]
            assert tokens is not None, server
            got = tokens.role_of(token)
            assert got is not None and got in auth.roles_for(method(server, name)), (
                caller,
                server,
                name,
            )
    actor_token = auth.client_token(token_env["actor"], "actor")
    for server, name in (("quantizer", "PublishWeights"), ("replay", "UpdatePriorities")):
        tokens = accepted[server]
        assert tokens is not None
        assert tokens.role_of(actor_token) not in auth.roles_for(method(server, name)), name


# ------------------------------------------------------------------- compose

_VAR = re.compile(
    r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(ValueError):
    """A ${VAR:?message} whose VAR is unset or empty."""


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's variable substitution: $$, $VAR, ${VAR}, ${VAR:-default}, ${VAR:?error}."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3)
        current = env.get(name)
        unset = current is None or (op is not None and op.startswith(":") and current == "")
        if op in (":-", "-") and unset:
            return arg or ""
        if op in (":?", "?") and unset:
            raise InterpolationError(f"{name}: {arg}")
        return current or ""

    result = _VAR.sub(sub, value)
    if result != value and "$" in value:
        # Compose casts a substituted value to the type its field has (replicas: 2).
        parsed = yaml.safe_load(result) if result.strip() else result
        if isinstance(parsed, int | float) and not isinstance(parsed, bool):
            return parsed
    return result


def load_compose(env: Mapping[str, str]) -> dict[str, Any]:
    """docker-compose.yml after YAML merge keys and variable substitution."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    return dict(interpolate(raw, env))


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A compose service's environment as a dict (map or KEY=VALUE list)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def healthcheck_address(test: list[str]) -> str:
    """The HOST:PORT of an `actorq health HOST:PORT` healthcheck."""
    assert test[:3] == ["CMD", "actorq", "health"], test
    return test[3]


# ---------------------------------------------------------------- Dockerfile


@dataclass
class Stage:
    """One FROM ... AS name stage and the instructions in it."""

    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, keyword: str) -> str | None:
        values = [arg for kw, arg in self.instructions if kw == keyword]
        return values[-1] if values else None

    def all(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


def dockerfile_stages(path: Path = DOCKERFILE) -> dict[str, Stage]:
    """Stages by name, with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, arg = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = arg.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else parts[0]
            current = Stage(name, parts[0])
            stages[name] = current
        elif current is not None:
            current.instructions.append((keyword, arg.strip()))
    return stages


def stage_chain(stages: Mapping[str, Stage], name: str) -> list[Stage]:
    """A stage and the stages it is built FROM, nearest first."""
    chain = [stages[name]]
    while chain[-1].base in stages:
        chain.append(stages[chain[-1].base])
    return chain


def image_env(stages: Mapping[str, Stage], name: str) -> dict[str, str]:
    """ENV of a final stage, inherited ones included (KEY=VALUE form only)."""
    env: dict[str, str] = {}
    for stage in reversed(stage_chain(stages, name)):
        for arg in stage.all("ENV"):
            for item in shlex.split(arg):
                key, _, value = item.partition("=")
                env[key] = value
    return env


# ----------------------------------------------------------------- kustomize


def kubectl() -> str:
    """The kubectl binary; the tests render with its kustomize, as `kubectl apply -k` does."""
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail(
            "kubectl not found: the Kubernetes tests render deploy/k8s with `kubectl kustomize`."
            " Install kubectl (https://kubernetes.io/docs/tasks/tools/)"
        )
    return found


def render(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize DIRECTORY` as a list of manifests."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise ValueError(f"kubectl kustomize {directory}: {result.stderr}")
    return [d for d in yaml.safe_load_all(result.stdout) if d]


# ------------------------------------------------------------- deploy/*.py scripts


def deploy_script(name: str) -> ModuleType:
    """deploy/NAME.py as a module (deploy/ is a folder of scripts, not a package)."""
    if str(ROOT / "deploy") not in sys.path:
        sys.path.append(str(ROOT / "deploy"))  # they import each other, as when run
    spec = importlib.util.spec_from_file_location(name, ROOT / "deploy" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
