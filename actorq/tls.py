"""Optional TLS for every gRPC server and channel, from PEM files named by env vars.

Off unless set (local runs talk plaintext on loopback). In a cluster the files
come from a Secret mounted read-only (``deploy/k8s``) or a compose bind mount:

    ACTORQ_TLS_CERT  server certificate chain (PEM); with ACTORQ_TLS_KEY, servers listen with TLS
    ACTORQ_TLS_KEY   the server certificate's private key (PEM)
    ACTORQ_TLS_CA    CA certificate(s) (PEM) that clients trust; set, channels use TLS
    ACTORQ_TLS_SERVER_NAME  name to check the server certificate against, when it differs
                     from the host in the address (e.g. a shared cert for "actorq")

Mutual TLS (callers prove who they are with a certificate):

    ACTORQ_TLS_CLIENT_CA    CA certificate(s) (PEM) a server requires client certificates
                     to be signed by; set, a client without such a certificate fails
                     its handshake (before any RPC, health included)
    ACTORQ_TLS_CLIENT_CERT  the certificate chain (PEM) channels present as a client, and
    ACTORQ_TLS_CLIENT_KEY   its key; unset, channels present ACTORQ_TLS_CERT/KEY (one
                     certificate for both ends, which then needs both the serverAuth and
                     clientAuth key usages, or none)

Every ActorQ process is both a server and a client, so a deployment sets all
three (five with mTLS). A TLS server refuses plaintext clients (their handshake
fails). A client certificate proves membership, not a role: roles come from
tokens (``actorq.auth``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import grpc

from actorq.config import ConfigError

TLS_CERT_ENV = "ACTORQ_TLS_CERT"
TLS_KEY_ENV = "ACTORQ_TLS_KEY"
TLS_CA_ENV = "ACTORQ_TLS_CA"
TLS_SERVER_NAME_ENV = "ACTORQ_TLS_SERVER_NAME"
TLS_CLIENT_CA_ENV = "ACTORQ_TLS_CLIENT_CA"
TLS_CLIENT_CERT_ENV = "ACTORQ_TLS_CLIENT_CERT"
TLS_CLIENT_KEY_ENV = "ACTORQ_TLS_CLIENT_KEY"
ENV_VARS = (
    TLS_CERT_ENV,
    TLS_KEY_ENV,
    TLS_CA_ENV,
    TLS_SERVER_NAME_ENV,
    TLS_CLIENT_CA_ENV,
    TLS_CLIENT_CERT_ENV,
    TLS_CLIENT_KEY_ENV,
)


class TLSConfigError(ConfigError):
    """TLS settings that cannot work, with the reason."""


def _read(env: Mapping[str, str], var: str) -> bytes:
    path = Path(env[var])
    try:
        return path.read_bytes()
    except OSError as err:
        raise TLSConfigError(f"{var}={path}: cannot read it ({err.strerror})") from None


def _pair(env: Mapping[str, str], cert_var: str, key_var: str, what: str) -> bool:
    """Whether a cert/key pair is set; TLSConfigError if only one of them is."""
    cert, key = env.get(cert_var, ""), env.get(key_var, "")
    if bool(cert) != bool(key):
        missing = key_var if cert else cert_var
        raise TLSConfigError(f"{what} needs both {cert_var} and {key_var}; {missing} is unset")
    return bool(cert)


def server_credentials(env: Mapping[str, str] | None = None) -> grpc.ServerCredentials | None:
    """TLS credentials for a server, or None when ACTORQ_TLS_CERT/KEY are unset; with
    ACTORQ_TLS_CLIENT_CA, clients must present a certificate it signed."""
    env = os.environ if env is None else env
    client_ca = env.get(TLS_CLIENT_CA_ENV, "")
    if not _pair(env, TLS_CERT_ENV, TLS_KEY_ENV, "TLS"):
        if client_ca:
            raise TLSConfigError(
                f"{TLS_CLIENT_CA_ENV} asks for client certificates, which needs a TLS server: "
                f"set {TLS_CERT_ENV} and {TLS_KEY_ENV} too"
            )
        return None
    pairs = [(_read(env, TLS_KEY_ENV), _read(env, TLS_CERT_ENV))]
    if not client_ca:
        return grpc.ssl_server_credentials(pairs)
    return grpc.ssl_server_credentials(
        pairs, root_certificates=_read(env, TLS_CLIENT_CA_ENV), require_client_auth=True
    )


def channel_credentials(env: Mapping[str, str] | None = None) -> grpc.ChannelCredentials | None:
    """TLS credentials trusting ACTORQ_TLS_CA, or None when it is unset; they present
    ACTORQ_TLS_CLIENT_CERT/KEY (else ACTORQ_TLS_CERT/KEY) as a client certificate
    when set, for servers that require one."""
    env = os.environ if env is None else env
    if not env.get(TLS_CA_ENV, ""):
        return None
    key = cert = None
    if _pair(env, TLS_CLIENT_CERT_ENV, TLS_CLIENT_KEY_ENV, "a client certificate"):
        key, cert = _read(env, TLS_CLIENT_KEY_ENV), _read(env, TLS_CLIENT_CERT_ENV)
    elif _pair(env, TLS_CERT_ENV, TLS_KEY_ENV, "TLS"):
        key, cert = _read(env, TLS_KEY_ENV), _read(env, TLS_CERT_ENV)
    return grpc.ssl_channel_credentials(
        root_certificates=_read(env, TLS_CA_ENV), private_key=key, certificate_chain=cert
    )


def channel_options(env: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """Extra channel options: the name the server certificate is checked against."""
    env = os.environ if env is None else env
    name = env.get(TLS_SERVER_NAME_ENV, "")
    return [("grpc.ssl_target_name_override", name)] if name else []
