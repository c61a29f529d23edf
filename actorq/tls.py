"""Optional TLS for every gRPC server and channel, from PEM files named by env vars.

Off unless set (local runs talk plaintext on loopback). In a cluster the files
come from a Secret mounted read-only (``deploy/k8s``) or a compose bind mount:

    ACTORQ_TLS_CERT  server certificate chain (PEM); with ACTORQ_TLS_KEY, servers listen with TLS
    ACTORQ_TLS_KEY   the server certificate's private key (PEM)
    ACTORQ_TLS_CA    CA certificate(s) (PEM) that clients trust; set, channels use TLS
    ACTORQ_TLS_SERVER_NAME  name to check the server certificate against, when it differs
                     from the host in the address (e.g. a shared cert for "actorq")

Every ActorQ process is both a server and a client, so a deployment sets all
three. A TLS server refuses plaintext clients (their handshake fails).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import grpc

TLS_CERT_ENV = "ACTORQ_TLS_CERT"
TLS_KEY_ENV = "ACTORQ_TLS_KEY"
TLS_CA_ENV = "ACTORQ_TLS_CA"
TLS_SERVER_NAME_ENV = "ACTORQ_TLS_SERVER_NAME"
ENV_VARS = (TLS_CERT_ENV, TLS_KEY_ENV, TLS_CA_ENV, TLS_SERVER_NAME_ENV)


class TLSConfigError(ValueError):
    """TLS settings that cannot work, with the reason."""


def _read(env: Mapping[str, str], var: str) -> bytes:
    path = Path(env[var])
    try:
        return path.read_bytes()
    except OSError as err:
        raise TLSConfigError(f"{var}={path}: cannot read it ({err.strerror})") from None


def server_credentials(env: Mapping[str, str] | None = None) -> grpc.ServerCredentials | None:
    """TLS credentials for a server, or None when ACTORQ_TLS_CERT/KEY are unset."""
    env = os.environ if env is None else env
    cert, key = env.get(TLS_CERT_ENV, ""), env.get(TLS_KEY_ENV, "")
    if not cert and not key:
        return None
    if not (cert and key):
        missing = TLS_KEY_ENV if cert else TLS_CERT_ENV
        raise TLSConfigError(f"TLS needs both {TLS_CERT_ENV} and {TLS_KEY_ENV}; {missing} is unset")
    return grpc.ssl_server_credentials([(_read(env, TLS_KEY_ENV), _read(env, TLS_CERT_ENV))])


def channel_credentials(env: Mapping[str, str] | None = None) -> grpc.ChannelCredentials | None:
    """TLS credentials trusting ACTORQ_TLS_CA, or None when it is unset."""
    env = os.environ if env is None else env
    if not env.get(TLS_CA_ENV, ""):
        return None
    return grpc.ssl_channel_credentials(root_certificates=_read(env, TLS_CA_ENV))


def channel_options(env: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """Extra channel options: the name the server certificate is checked against."""
    env = os.environ if env is None else env
    name = env.get(TLS_SERVER_NAME_ENV, "")
    return [("grpc.ssl_target_name_override", name)] if name else []
