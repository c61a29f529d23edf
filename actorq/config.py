"""Typed configuration: one dataclass per service/algorithm, loaded from
defaults < config file section < ``ACTORQ_*`` environment < command-line flags.

A field ``batch_size`` of the learner config is set by ``--batch-size 64`` or
``ACTORQ_BATCH_SIZE=64``, or in the config file under ``learner:``. A nested
dataclass field ``dqn`` exposes its fields as ``--dqn-lr`` /
``ACTORQ_DQN_LR``. Every field carries its help text in
``field(metadata={"help": ...})``; ``__post_init__`` checks values and raises
ConfigError with a sentence that says what is wrong.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import yaml

T = TypeVar("T")
ENV_PREFIX = "ACTORQ_"


class ConfigError(ValueError):
    """A configuration value that cannot work, with the reason."""


def opt(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with a default and its one-line help."""
    if isinstance(default, list | dict):
        return dataclasses.field(
            default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs
        )
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


def closest(name: str, known: Sequence[str]) -> str:
    """``; did you mean 'x'?`` for the known name nearest to a misspelt one ('' for none)."""
    import difflib

    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


def leaves(cls: type, prefix: str = "") -> list[tuple[str, dataclasses.Field[Any], Any]]:
    """(dotted name, field, resolved type) for every leaf field, nested included."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.extend(leaves(typing.cast(type, tp), f"{prefix}{f.name}."))
        else:
            out.append((f"{prefix}{f.name}", f, tp))
    return out


def _parse_value(raw: Any, tp: Any, name: str) -> Any:
    """Coerce a string/YAML value to the field's type."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        non_none = [a for a in args if a is not type(None)]
        if raw is None or (isinstance(raw, str) and raw.lower() in ("", "none", "null")):
            return None
        return _parse_value(raw, non_none[0], name)
    try:
        if tp is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if origin in (list, tuple):
            items = raw
            if isinstance(raw, str):
                items = (
                    [x for x in raw.replace("x", ",").split(",") if x.strip()]
                    if raw.strip()
                    else []
                )
            elem = args[0] if args else str
            parsed = [_parse_value(x, elem, name) for x in items]
            return parsed if origin is list else tuple(parsed)
        if tp in (int, float, str):
            if tp is int and isinstance(raw, float) and not raw.is_integer():
                raise ValueError(raw)
            return tp(raw)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{name}: cannot read {raw!r} as {getattr(tp, '__name__', tp)}") from err
    return raw


def _set(values: dict[str, Any], dotted: str, value: Any) -> None:
    values[dotted] = value


def _build(cls: type[T], flat: Mapping[str, Any], prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        tp = hints[f.name]
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = _build(typing.cast(type, tp), flat, f"{key}.")
        elif key in flat:
            kwargs[f.name] = flat[key]
    return cls(**kwargs)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested settings mapping as dotted keys: {"dqn": {"lr": 1}} -> {"dqn.lr": 1}."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{str(k).replace('-', '_')}"
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def read_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into a dict."""
    text = Path(path).read_text()
    data = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at top level, found {type(data).__name__}")
    return data


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one --flag per leaf field of cls (default None: unset flags don't override)."""
    for dotted, f, tp in leaves(cls):
        flag = "--" + dotted.replace(".", "-").replace("_", "-")
        parser.add_argument(
            flag, dest=dotted, default=None, help=f.metadata.get("help", ""), metavar=_metavar(tp)
        )


def _metavar(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        return "A,B,..."
    return getattr(tp, "__name__", "VALUE").upper()


def load(
    cls: type[T],
    *,
    section: str | None = None,
    file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> T:
    """Resolve cls from its sources; raises ConfigError on a bad value or unknown key."""
    types_of = {dotted: tp for dotted, _f, tp in leaves(cls)}
    values: dict[str, Any] = {}
    if file is not None:
        data = read_file(file)
        if section is not None:
            data = data.get(section) or {}
        for key, raw in flatten(data).items():
            if key not in types_of:
                raise ConfigError(f"{file}: unknown setting {key!r} in section {section!r}")
            _set(values, key, _parse_value(raw, types_of[key], key))
    env = os.environ if env is None else env
    for dotted, tp in types_of.items():
        var = ENV_PREFIX + dotted.replace(".", "_").upper()
        if var in env:
            _set(values, dotted, _parse_value(env[var], tp, var))
    for source in (flags or {}), (overrides or {}):
        for key, raw in source.items():
            if raw is None:
                continue
            if key not in types_of:
                raise ConfigError(f"unknown setting {key!r} for {cls.__name__}")
            _set(values, key, _parse_value(raw, types_of[key], key))
    try:
        return _build(cls, values)
    except TypeError as err:
        raise ConfigError(f"{cls.__name__}: {err}") from err


def from_argv(
    cls: type[T], argv: Sequence[str] | None, *, prog: str, section: str, description: str = ""
) -> T:
    """Parse a service's command line (plus --config FILE / ACTORQ_CONFIG) into cls."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--config", default=os.environ.get(ENV_PREFIX + "CONFIG"), help="YAML/JSON config file"
    )
    add_arguments(parser, cls)
    ns = parser.parse_args(argv)
    flags = {k: v for k, v in vars(ns).items() if k != "config"}
    try:
        return load(cls, section=section, file=ns.config, flags=flags)
    except ConfigError as err:
        parser.error(str(err))
        raise  # unreachable: parser.error exits


def to_dict(obj: Any) -> dict[str, Any]:
    """A config dataclass as plain data (for resolved-config files)."""
    return dataclasses.asdict(obj)


# ---------------------------------------------------------------- store URLs

REDIS_SCHEMES = ("redis", "rediss", "unix")
_SECRET_PARAMS = ("password", "pass", "token", "auth", "secret")


def _is_secret_param(name: str) -> bool:
    return any(w in name.lower() for w in _SECRET_PARAMS)


def is_redis_url(store: str) -> bool:
    """Whether the configured store names Redis (anything but 'memory')."""
    return store.split("://", 1)[0] in REDIS_SCHEMES and "://" in store


def redact_url(store: str) -> str:
    """The store with its password (and password-like query values) replaced by ***.

    Use it for every log line, error message and summary that shows the store.
    """
    if not is_redis_url(store):
        return store
    try:
        parts = urlsplit(store)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
            # A lone userinfo ("redis://secret@host") is a password for redis-py too.
            netloc = f"{user}:***@{host}"
        query = urlencode(
            [
                (k, "***" if _is_secret_param(k) else v)
                for k, v in parse_qsl(parts.query, keep_blank_values=True)
            ],
            safe="*/:",
        )
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return f"{store.split('://', 1)[0]}://***"


def url_secrets(url: str) -> list[str]:
    """The secrets ``redact_url`` hides (password, password-like query values), as
    written and unquoted: to scrub them from messages that quote the URL's parts."""
    parts = urlsplit(url)
    found = [parts.password or ""]
    if parts.username and parts.password is None:  # redis://secret@host: a password too
        found.append(parts.username)
    found += [v for k, v in parse_qsl(parts.query) if _is_secret_param(k)]
    return [unquote(s) for s in found if s] + [s for s in found if s]
