"""Per-environment presets, as RL Zoo keeps them: tuned settings for one algorithm on one env.

``commands/configs/presets/ALGO.yaml`` maps env ids to overlays of the same
shape as ``--config`` (sections ``train``, ``replay``, ``quantizer``,
``learner``, ``actor``). A run's configuration is, lowest first: the embedded
``commands/configs/ALGO.yaml``, the preset of its env (when there is one and
``--no-preset`` was not given), ``--config FILE``, the flags. ``actorq presets``
lists them. Each file says which values were tuned, how, and on which seeds.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import yaml

from actorq.config import ConfigError, flatten
from actorq.network import ALGOS

# What a preset may hold besides the sections: where its values come from, and the
# module its env needs (listed as missing when it is not installed).
ABOUT, REQUIRES = "about", "requires"
META = (ABOUT, REQUIRES)


def preset_file(algo: str) -> str:
    """The presets file of an algorithm, as a path inside the package."""
    return f"commands/configs/presets/{algo}.yaml"


def presets(algo: str) -> dict[str, dict[str, Any]]:
    """Env id -> preset of one algorithm ({} when it has no presets file)."""
    path = resources.files("commands.configs").joinpath(f"presets/{algo}.yaml")
    if not path.is_file():
        return {}
    table = yaml.safe_load(path.read_text()) or {}
    if not isinstance(table, Mapping) or not all(isinstance(v, Mapping) for v in table.values()):
        raise ConfigError(f"{preset_file(algo)}: must map env ids to sections of settings")
    return {str(env): dict(preset) for env, preset in table.items()}


def match(table: Mapping[str, Any], env: str) -> str | None:
    """The key of ``env``'s preset: the env id itself, else the longest ``PREFIX*`` key
    it starts with (``dmc:*`` for every dm_control task); None when there is none."""
    if env in table:
        return env
    prefixes = [k for k in table if k.endswith("*") and env.startswith(k[:-1])]
    return max(prefixes, key=len) if prefixes else None


def select(table: Mapping[str, Mapping[str, Any]], env: str) -> dict[str, Any]:
    """The overlay of ``env``'s preset in a table (its sections, without ``about`` and
    ``requires``); {} for an env without one: the embedded defaults apply."""
    key = match(table, env)
    preset = table[key] if key is not None else {}
    return {k: v for k, v in preset.items() if k not in META}


def preset_for(algo: str, env: str, enabled: bool = True) -> dict[str, Any]:
    """The overlay a run of ``algo`` on ``env`` gets from its preset ({}: none or disabled)."""
    return select(presets(algo), env) if enabled and algo in ALGOS else {}


def applied(algo: str, env: str, enabled: bool = True) -> str:
    """The preset a run uses, as ``presets/ALGO.yaml#KEY``; '' for none."""
    key = match(presets(algo), env) if enabled and algo in ALGOS else None
    return f"presets/{algo}.yaml#{key}" if key is not None else ""


def describe(algo: str, env: str, enabled: bool = True) -> str:
    """One line on which preset a run uses."""
    if not enabled:
        return "preset: none (--no-preset)"
    key = match(presets(algo), env)
    if key is None:
        return f"preset: none for {env} (embedded defaults, commands/configs/{algo}.yaml)"
    return f"preset: {algo} {key} ({preset_file(algo)}; `actorq presets` shows it)"


def installed(module: str) -> bool:
    """Whether a module can be imported here (without importing it)."""
    return importlib.util.find_spec(module) is not None


def listing(algos: Sequence[str] = ALGOS) -> str:
    """Every preset: algorithm, env id, where its values come from, and its settings."""
    lines = []
    for algo in algos:
        for env, preset in presets(algo).items():
            needs = preset.get(REQUIRES)
            missing = f" [needs {needs}: not installed]" if needs and not installed(needs) else ""
            lines.append(f"{algo} {env}{missing}: {' '.join(str(preset.get(ABOUT, '')).split())}")
            settings = flatten(select(presets(algo), env))
            lines.extend(f"    {key} = {value}" for key, value in settings.items())
    return "\n".join(lines) or "no presets"


def main(argv: Sequence[str]) -> int:
    """``actorq presets [--algo ALGO]``: print the presets ``actorq train`` picks by env id."""
    p = argparse.ArgumentParser(
        prog="actorq presets",
        description="Tuned settings per env id that `actorq train` applies automatically "
        "(--config overrides them, --no-preset turns them off).",
    )
    p.add_argument("--algo", choices=ALGOS, help="only this algorithm's presets")
    ns = p.parse_args(list(argv))
    try:
        print(listing([ns.algo] if ns.algo else ALGOS))
    except ConfigError as err:
        print(f"actorq presets: {err}", file=sys.stderr)
        return 2
    return 0
