"""Who may call what: bearer tokens checked on every RPC but health, roles per method.

Off unless a token variable is set (local runs on loopback need none). Each
variable may instead name a file holding the token (``NAME_FILE``: a mounted
Secret, a compose secret), never both:

    ACTORQ_TOKEN          the shared token: a server accepts it for every method,
                          a client presents it (unless its role's token is set)
    ACTORQ_TOKEN_LEARNER  role ``learner``: publish weights, sample, update priorities, read
    ACTORQ_TOKEN_ACTOR    role ``actor``: insert transitions, read (pull models, status)
    ACTORQ_TOKEN_READER   role ``reader``: read only (status, stats, models, reflection)

A server accepts every token it is given, each for its role (``POLICY``); a
client presents its own role's token when the process has one (the learner
and actor services name their role), else the shared token, else the reader
token. So one deployment sets ``ACTORQ_TOKEN`` everywhere (authentication, no
roles); a stricter one gives each process only the tokens it needs (see the
README's table): an actor pod that holds the actor and reader tokens cannot
publish weights or touch priorities even if it is taken over.

Health (``grpc.health.v1.Health``) is open: Kubernetes' gRPC probes send no
metadata, and it reveals nothing but SERVING. Reflection needs a token of any
role: it only describes the public wire format, but an open reflection stream
is one more thing an anonymous caller could hold.

Refusals: no or unknown token -> UNAUTHENTICATED, a known token of a role the
method does not admit -> PERMISSION_DENIED; the servicer never runs, so the
call changes nothing. Tokens travel as ``authorization: Bearer TOKEN``
metadata: use TLS (``actorq.tls``) wherever the network is shared, or anyone
on the path reads them.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from actorq.config import ConfigError
from actorq.v1 import actor_pb2, learner_pb2, quantizer_pb2, replay_pb2

TOKEN_ENV = "ACTORQ_TOKEN"
LEARNER, ACTOR, READER = "learner", "actor", "reader"
ROLES = (LEARNER, ACTOR, READER)
# The shared token's role: every method.
SHARED = "shared"
ROLE_TOKEN_ENVS = {role: f"{TOKEN_ENV}_{role.upper()}" for role in ROLES}
FILE_SUFFIX = "_FILE"
ENV_VARS = tuple(
    name + suffix for name in (TOKEN_ENV, *ROLE_TOKEN_ENVS.values()) for suffix in ("", FILE_SUFFIX)
)
METADATA_KEY = "authorization"
SCHEME = "Bearer "
# Long enough that guessing is hopeless; `openssl rand -hex 32` gives 64.
MIN_TOKEN_CHARS = 16
# What a gRPC metadata value may carry, and a shell or YAML file keeps intact.
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~+/=-]+")

HEALTH_PREFIX = "/grpc.health.v1.Health/"
REFLECTION_PREFIX = "/grpc.reflection."

log = logging.getLogger(__name__)


def _method(module: Any, service: str, name: str) -> str:
    """``/package.Service/Method`` from the generated descriptors (a typo fails at import)."""
    desc = module.DESCRIPTOR.services_by_name[service]
    return f"/{desc.full_name}/{desc.methods_by_name[name].name}"


ANY_ROLE = frozenset(ROLES)
# Method -> the roles that may call it (the shared token may call everything).
POLICY: dict[str, frozenset[str]] = {
    _method(replay_pb2, "ReplayService", "Insert"): frozenset({ACTOR}),
    _method(replay_pb2, "ReplayService", "Sample"): frozenset({LEARNER}),
    _method(replay_pb2, "ReplayService", "UpdatePriorities"): frozenset({LEARNER}),
    _method(replay_pb2, "ReplayService", "GetStats"): ANY_ROLE,
    _method(quantizer_pb2, "QuantizerService", "PublishWeights"): frozenset({LEARNER}),
    # Reading a served model is a read: actors act with it, the launcher evaluates it.
    _method(quantizer_pb2, "QuantizerService", "GetModel"): ANY_ROLE,
    _method(quantizer_pb2, "QuantizerService", "ListModels"): ANY_ROLE,
    _method(learner_pb2, "LearnerService", "GetStatus"): ANY_ROLE,
    _method(actor_pb2, "ActorService", "GetStatus"): ANY_ROLE,
}


def roles_for(method: str) -> frozenset[str]:
    """The roles that may call method (empty: the shared token only)."""
    if method.startswith(REFLECTION_PREFIX):
        return ANY_ROLE
    return POLICY.get(method, frozenset())


class AuthConfigError(ConfigError):
    """Token settings that cannot work, with the variable and the fix."""


def read_token(env: Mapping[str, str], var: str) -> str:
    """The token in var, or in the file var_FILE names ('' when neither is set).

    AuthConfigError when both are set, the file cannot be read, or the token
    is too short or holds characters metadata cannot carry.
    """
    value, path = env.get(var, ""), env.get(var + FILE_SUFFIX, "")
    if value and path:
        raise AuthConfigError(f"set {var} or {var}{FILE_SUFFIX}, not both")
    if path:
        try:
            value = Path(path).read_text().strip()
        except (OSError, UnicodeDecodeError) as err:
            reason = err.strerror if isinstance(err, OSError) else "not text"
            raise AuthConfigError(f"{var}{FILE_SUFFIX}={path}: cannot read it ({reason})") from None
        var = f"{var}{FILE_SUFFIX} ({path})"
        if not value:
            raise AuthConfigError(f"{var} is empty; put the token in it")
    if not value:
        return ""
    if len(value) < MIN_TOKEN_CHARS or not _TOKEN_CHARS.fullmatch(value):
        raise AuthConfigError(
            f"{var} must be at least {MIN_TOKEN_CHARS} characters of letters, digits and "
            "._~+/=- (e.g. the output of `openssl rand -hex 32`)"
        )
    return value


def _digest(token: str) -> bytes:
    # Compared as digests: equal length, so compare_digest's time says nothing.
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class AcceptedTokens:
    """The tokens a server accepts, each with its role (digests only are kept)."""

    entries: tuple[tuple[bytes, str], ...]

    def role_of(self, token: str) -> str | None:
        """The role of a presented token, or None if it is not accepted."""
        presented = _digest(token)
        found = None
        for digest, role in self.entries:  # every entry compared: no early exit
            if hmac.compare_digest(digest, presented):
                found = role
        return found

    @property
    def roles(self) -> list[str]:
        return [role for _, role in self.entries]


def accepted_tokens(env: Mapping[str, str] | None = None) -> AcceptedTokens | None:
    """What a server accepts, or None when no token is set (auth off)."""
    env = os.environ if env is None else env
    found: dict[str, tuple[str, str]] = {}  # token -> (role, variable)
    for role, var in ((SHARED, TOKEN_ENV), *((r, v) for r, v in ROLE_TOKEN_ENVS.items())):
        token = read_token(env, var)
        if not token:
            continue
        if token in found:
            raise AuthConfigError(
                f"{var} holds the same token as {found[token][1]}; each role needs its own"
            )
        found[token] = (role, var)
    if not found:
        return None
    return AcceptedTokens(tuple((_digest(t), role) for t, (role, _) in found.items()))


def client_token(env: Mapping[str, str] | None = None, role: str | None = None) -> str:
    """The token a client presents: its role's, else the shared one, else the reader's
    ('' when none is set: calls go without one)."""
    env = os.environ if env is None else env
    if role is not None and role not in ROLES:
        raise ValueError(f"role {role!r} unknown; roles: {list(ROLES)}")
    order = [ROLE_TOKEN_ENVS[role]] if role else []
    for var in (*order, TOKEN_ENV, ROLE_TOKEN_ENVS[READER]):
        token = read_token(env, var)
        if token:
            return token
    return ""


def bearer(metadata: Sequence[tuple[str, Any]] | None) -> str | None:
    """The token of an ``authorization: Bearer TOKEN`` entry (None if there is none)."""
    for key, value in metadata or ():
        if key == METADATA_KEY and isinstance(value, str) and value.startswith(SCHEME):
            return value[len(SCHEME) :].strip()
    return None


class RefusalLog:
    """Logs refused calls at warning, at most one line per ``every_s`` (with a count
    of those not logged): a caller hammering with a bad token cannot flood the log."""

    def __init__(self, logger: logging.Logger, every_s: float = 10.0) -> None:
        self._log, self._every_s = logger, every_s
        self._lock = threading.Lock()
        self._next = 0.0
        self._quiet = 0

    def refused(self, text: str) -> None:
        with self._lock:
            now = time.monotonic()
            if now < self._next:
                self._quiet += 1
                return
            quiet, self._quiet, self._next = self._quiet, 0, now + self._every_s
        more = f" ({quiet} more refused since the last such line)" if quiet else ""
        self._log.warning("%s%s", text, more)


def refusing_handler(
    handler: grpc.RpcMethodHandler,
    code: grpc.StatusCode,
    details: str,
    on_call: Callable[[Any], None],
) -> grpc.RpcMethodHandler:
    """A handler of the same shape as handler that ends every call with code and
    details: the request is never parsed, the servicer never runs.

    on_call(context) runs first (logging, trailing metadata).
    """

    def refuse(_request: Any, context: grpc.ServicerContext) -> Any:
        on_call(context)
        context.abort(code, details)

    def skip(_data: bytes) -> bytes:
        return b""  # a refused request's bytes are not even parsed

    streaming_in, streaming_out = handler.request_streaming, handler.response_streaming
    if streaming_in and streaming_out:
        return grpc.stream_stream_rpc_method_handler(refuse, skip, handler.response_serializer)
    if streaming_in:
        return grpc.stream_unary_rpc_method_handler(refuse, skip, handler.response_serializer)
    if streaming_out:
        return grpc.unary_stream_rpc_method_handler(refuse, skip, handler.response_serializer)
    return grpc.unary_unary_rpc_method_handler(refuse, skip, handler.response_serializer)


class AuthInterceptor(grpc.ServerInterceptor):
    """Checks the caller's token against ``AcceptedTokens`` and its role against
    ``POLICY`` before any servicer code runs (health is exempt)."""

    def __init__(self, accepted: AcceptedTokens) -> None:
        self._accepted = accepted
        self._refusals = RefusalLog(log)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        handler = continuation(handler_call_details)
        if handler is None or method.startswith(HEALTH_PREFIX):
            return handler
        token = bearer(handler_call_details.invocation_metadata)
        if token is None:
            return self._refuse(
                handler,
                grpc.StatusCode.UNAUTHENTICATED,
                f"{method} needs a token: set {TOKEN_ENV} (or a role's token, "
                f"{', '.join(ROLE_TOKEN_ENVS.values())}) for the caller",
            )
        role = self._accepted.role_of(token)
        if role is None:
            return self._refuse(
                handler,
                grpc.StatusCode.UNAUTHENTICATED,
                f"{method}: the token presented is not accepted here; check {TOKEN_ENV} "
                "(or the role token) is the same for the caller and this service",
            )
        allowed = roles_for(method)
        if role != SHARED and role not in allowed:
            who = ", ".join(sorted(allowed)) or f"the shared token ({TOKEN_ENV}) only"
            return self._refuse(
                handler,
                grpc.StatusCode.PERMISSION_DENIED,
                f"role {role!r} may not call {method} (allowed: {who})",
            )
        return handler

    def _refuse(
        self, handler: grpc.RpcMethodHandler, code: grpc.StatusCode, details: str
    ) -> grpc.RpcMethodHandler:
        def note(context: grpc.ServicerContext) -> None:
            self._refusals.refused(f"refused a call from {context.peer()} ({code.name}): {details}")

        return refusing_handler(handler, code, details, note)


class _TokenCallDetails(grpc.ClientCallDetails):
    def __init__(self, details: grpc.ClientCallDetails, metadata: list[tuple[str, str]]) -> None:
        self.method = details.method
        self.timeout = details.timeout
        self.metadata = metadata
        self.credentials = details.credentials
        self.wait_for_ready = getattr(details, "wait_for_ready", None)
        self.compression = getattr(details, "compression", None)


class TokenInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds ``authorization: Bearer TOKEN`` to every call of a channel.

    Metadata rather than call credentials: gRPC sends call credentials only
    over TLS, and a token must also work on a plaintext loopback run.
    """

    def __init__(self, token: str) -> None:
        self._entry = (METADATA_KEY, SCHEME + token)

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = [m for m in (details.metadata or ()) if m[0] != METADATA_KEY]
        return _TokenCallDetails(details, [*metadata, self._entry])

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)
