"""Readers of deploy/ for the tests: the compose file as compose interpolates it, the
Dockerfile's stages, the env vars each service reads, and a small kustomize renderer.

No Docker engine or cluster is needed (or available) here: these read the files the way
`docker compose` and `kubectl kustomize` would, for the features our files use.
"""

from __future__ import annotations

import copy
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from actorq import config, metrics, tls

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
}


def env_vars_read_by(service: str) -> set[str]:
    """Every ACTORQ_* variable `actorq serve SERVICE` reads."""
    leaves = config.leaves(service_config(service))
    names = {config.ENV_PREFIX + dotted.replace(".", "_").upper() for dotted, _f, _t in leaves}
    return names | PROCESS_ENV_VARS


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


def _read_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _merge(base: Any, patch: Any) -> Any:
    """Strategic merge for what our patches touch: maps merge; lists of maps with a
    ``name`` merge by name (containers, env, ports); other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = _merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(x, dict) and "name" in x for x in [*base, *patch])
    ):
        out_list = [copy.deepcopy(x) for x in base]
        for item in patch:
            for i, existing in enumerate(out_list):
                if existing["name"] == item["name"]:
                    out_list[i] = _merge(existing, item)
                    break
            else:
                out_list.append(copy.deepcopy(item))
        return out_list
    return copy.deepcopy(patch)


def _read_env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def _generate_configmaps(root: Path, kust: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for gen in kust.get("configMapGenerator") or []:
        data: dict[str, str] = {}
        for env_file in gen.get("envs") or []:
            data.update(_read_env_file(root / env_file))
        for literal in gen.get("literals") or []:
            key, _, value = literal.partition("=")
            data[key] = value
        out.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": gen["name"]},
                "data": data,
                "_behavior": gen.get("behavior", "create"),
            }
        )
    return out


_SUPPORTED = {
    "apiVersion", "kind", "resources", "namespace", "labels", "patches",
    "configMapGenerator", "generatorOptions", "images", "replicas",
}  # fmt: skip


def _pod_spec(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    template = (doc.get("spec") or {}).get("template")
    return template.get("spec") if template else None


def render(directory: Path) -> list[dict[str, Any]]:
    """`kustomize build DIRECTORY` for the features our kustomizations use.

    Refuses a kustomization that uses anything else, so a new feature cannot
    slip past the tests unrendered.
    """
    kust = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kust) - _SUPPORTED
    if unknown:
        raise ValueError(
            f"{directory}: kustomize features not supported by tests/deploy.py: {unknown}"
        )
    if not (kust.get("generatorOptions") or {}).get("disableNameSuffixHash", False) and kust.get(
        "configMapGenerator"
    ):
        raise ValueError(f"{directory}: set generatorOptions.disableNameSuffixHash (see base)")
    docs: list[dict[str, Any]] = []
    for res in kust.get("resources") or []:
        path = directory / res
        docs += render(path) if path.is_dir() else _read_docs(path)
    for cm in _generate_configmaps(directory, kust):
        behavior = cm.pop("_behavior")
        existing = [
            d
            for d in docs
            if d["kind"] == "ConfigMap" and d["metadata"]["name"] == cm["metadata"]["name"]
        ]
        if behavior == "create":
            if existing:
                raise ValueError(f"ConfigMap {cm['metadata']['name']} generated twice")
            docs.append(cm)
        elif behavior == "merge":
            if not existing:
                raise ValueError(f"merge into missing ConfigMap {cm['metadata']['name']}")
            existing[0]["data"] = {**existing[0].get("data", {}), **cm["data"]}
        else:
            raise ValueError(f"configMapGenerator behavior {behavior!r} not supported")
    for patch in kust.get("patches") or []:
        target = patch.get("target") or {}
        body = (
            yaml.safe_load((directory / patch["path"]).read_text())
            if "path" in patch
            else yaml.safe_load(patch["patch"])
        )
        kind = target.get("kind", body.get("kind"))
        name = target.get("name", (body.get("metadata") or {}).get("name"))
        hits = [
            i for i, d in enumerate(docs) if d["kind"] == kind and d["metadata"]["name"] == name
        ]
        if len(hits) != 1:
            raise ValueError(f"patch {patch} matches {len(hits)} resources")
        docs[hits[0]] = _merge(docs[hits[0]], body)
    for rep in kust.get("replicas") or []:
        hits = [
            d
            for d in docs
            if d["kind"] in ("Deployment", "StatefulSet") and d["metadata"]["name"] == rep["name"]
        ]
        if len(hits) != 1:
            raise ValueError(f"replicas for {rep['name']} match {len(hits)} workloads")
        hits[0]["spec"]["replicas"] = rep["count"]
    for image in kust.get("images") or []:
        for doc in docs:
            spec = _pod_spec(doc)
            for c in (spec or {}).get("containers", []) + (spec or {}).get("initContainers", []):
                repo, _, tag = c["image"].partition(":")
                if repo == image["name"]:
                    c["image"] = f"{image.get('newName', repo)}:{image.get('newTag', tag)}"
    for label_set in kust.get("labels") or []:
        if label_set.get("includeSelectors") or label_set.get("includeTemplates"):
            raise ValueError("labels with includeSelectors/includeTemplates not supported")
        for doc in docs:
            doc["metadata"].setdefault("labels", {}).update(label_set["pairs"])
    namespace = kust.get("namespace")
    if namespace:
        for doc in docs:
            if doc["kind"] == "Namespace":
                doc["metadata"]["name"] = namespace
            else:
                doc["metadata"]["namespace"] = namespace
    return docs
