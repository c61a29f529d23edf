"""Callers that must prove who they are: tokens (shared or per role) and mutual TLS.

Every state-changing RPC without valid credentials is refused and changes
nothing; health stays open; every client of the repository (the services, the
health CLI, ``actorq train``'s launcher) works with authentication on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from conftest import ROOT, ServiceProcess
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from test_quantizer_service import SPEC, weights
from test_replay_guards import transitions
from test_tls import make_cert
from test_train import train

from actorq import auth, tls
from actorq.clients import ActorClient, LearnerClient, QuantizerClient, ReplayClient
from actorq.rpc import channel
from actorq.v1 import actor_pb2, learner_pb2, quantizer_pb2, replay_pb2

LEARNER_TOKEN = "learner-" + "l" * 24
ACTOR_TOKEN = "actor-" + "a" * 24
READER_TOKEN = "reader-" + "r" * 24
SHARED_TOKEN = "shared-" + "s" * 24
ROLE_TOKENS = {
    "ACTORQ_TOKEN_LEARNER": LEARNER_TOKEN,
    "ACTORQ_TOKEN_ACTOR": ACTOR_TOKEN,
    "ACTORQ_TOKEN_READER": READER_TOKEN,
}
AS_LEARNER = {"ACTORQ_TOKEN_LEARNER": LEARNER_TOKEN}
AS_ACTOR = {"ACTORQ_TOKEN_ACTOR": ACTOR_TOKEN}
AS_READER = {"ACTORQ_TOKEN_READER": READER_TOKEN}


# --- settings -------------------------------------------------------------------


def test_every_rpc_of_every_service_has_a_role_policy() -> None:
    services = [
        m.DESCRIPTOR.services_by_name[name]
        for m, name in (
            (replay_pb2, "ReplayService"),
            (quantizer_pb2, "QuantizerService"),
            (learner_pb2, "LearnerService"),
            (actor_pb2, "ActorService"),
        )
    ]
    methods = {f"/{s.full_name}/{m.name}" for s in services for m in s.methods}
    assert methods == set(auth.POLICY)


def test_a_token_may_come_from_a_file_as_a_mounted_secret(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text(SHARED_TOKEN + "\n")
    assert auth.read_token({"ACTORQ_TOKEN_FILE": str(secret)}, "ACTORQ_TOKEN") == SHARED_TOKEN


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"ACTORQ_TOKEN": SHARED_TOKEN, "ACTORQ_TOKEN_FILE": "/x"}, "not both"),
        ({"ACTORQ_TOKEN_FILE": "/no/such/file"}, "cannot read it"),
        ({"ACTORQ_TOKEN": "short"}, "at least 16 characters"),
        ({"ACTORQ_TOKEN": "has spaces in it, sixteen+"}, "at least 16 characters"),
        ({"ACTORQ_TOKEN": SHARED_TOKEN, "ACTORQ_TOKEN_ACTOR": SHARED_TOKEN}, "its own"),
    ],
)
def test_token_settings_that_cannot_work_are_refused_naming_the_variable(
    env: dict[str, str], words: str
) -> None:
    with pytest.raises(auth.AuthConfigError, match=words):
        auth.accepted_tokens(env)


def test_a_client_presents_its_roles_token_else_the_shared_one_else_the_readers() -> None:
    env = {**ROLE_TOKENS, "ACTORQ_TOKEN": SHARED_TOKEN}
    assert auth.client_token(env, "actor") == ACTOR_TOKEN
    assert auth.client_token(env) == SHARED_TOKEN
    assert auth.client_token(AS_READER, "learner") == READER_TOKEN
    assert auth.client_token({}) == ""
    assert auth.accepted_tokens({}) is None  # off unless set


# --- a replay and a quantizer with role tokens -------------------------------------


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServiceProcess]]:
    from conftest import start_service

    tmp = tmp_path_factory.mktemp("auth")
    started = {
        "replay": start_service(
            "replay", ["--min-size-to-sample", "1", "--sampler", "prioritized"], tmp, ROLE_TOKENS
        ),
        "quantizer": start_service("quantizer", [], tmp, ROLE_TOKENS),
    }
    yield started
    for svc in started.values():
        svc.stop()


def dial(address: str, env: dict[str, str]) -> grpc.Channel:
    """A channel that presents env's token: the role token in it, or the shared one."""
    role = next((r for r, var in auth.ROLE_TOKEN_ENVS.items() if var in env), None)
    return channel(address, role=role, env=env)


def replay_as(servers: dict[str, ServiceProcess], env: dict[str, str]) -> grpc.Channel:
    return dial(servers["replay"].address, env)


def replay_size(servers: dict[str, ServiceProcess]) -> int:
    with replay_as(servers, AS_READER) as ch:
        return int(ReplayClient(ch).stats().size)


def refused(call: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    ("caller", "expected"),
    [
        ({}, UNAUTHENTICATED),
        ({"ACTORQ_TOKEN": "not-the-right-token-at-all"}, UNAUTHENTICATED),
        (AS_LEARNER, PERMISSION_DENIED),
        (AS_READER, PERMISSION_DENIED),
    ],
    ids=["no-token", "wrong-token", "learner", "reader"],
)
def test_an_insert_without_the_actor_role_is_refused_and_stores_nothing(
    servers: dict[str, ServiceProcess], caller: dict[str, str], expected: grpc.StatusCode
) -> None:
    before = replay_size(servers)
    with replay_as(servers, caller) as ch:
        assert refused(lambda: ReplayClient(ch).insert([transitions(4)])) == expected
    assert replay_size(servers) == before


def test_the_actor_role_inserts(servers: dict[str, ServiceProcess]) -> None:
    before = replay_size(servers)
    with channel(servers["replay"].address, role="actor", env=AS_ACTOR) as ch:
        assert ReplayClient(ch).insert([transitions(4)]).size == before + 4


@pytest.mark.parametrize(
    ("caller", "expected"),
    [({}, UNAUTHENTICATED), (AS_ACTOR, PERMISSION_DENIED), (AS_READER, PERMISSION_DENIED)],
    ids=["no-token", "actor", "reader"],
)
def test_priorities_and_samples_without_the_learner_role_are_refused_and_change_nothing(
    servers: dict[str, ServiceProcess], caller: dict[str, str], expected: grpc.StatusCode
) -> None:
    with replay_as(servers, AS_ACTOR) as ch:
        ReplayClient(ch).insert([transitions(4)])
    with replay_as(servers, AS_READER) as ch:
        sampled_before = ReplayClient(ch).stats().sampled
    keys, zeros = np.arange(4, dtype=np.int64), np.zeros(4, np.float32)
    with replay_as(servers, caller) as ch:
        client = ReplayClient(ch)
        assert refused(lambda: client.update_priorities(keys, zeros)) == expected
        assert refused(lambda: list(client.sample_stream(4, num_batches=1))) == expected
    with replay_as(servers, AS_LEARNER) as ch:
        client = ReplayClient(ch)
        assert client.stats().sampled == sampled_before  # nothing drawn
        # No priority was zeroed: the learner samples as before.
        assert len(next(client.sample_stream(4, num_batches=1)).keys) == 4
        assert client.update_priorities(keys, np.ones(4, np.float32)) >= 0


def publish(address: str, env: dict[str, str], version: int) -> None:
    with dial(address, env) as ch:
        QuantizerClient(ch).publish(
            policy_version=version, learner_step=1, network=SPEC, weights=weights()
        )


@pytest.mark.parametrize(
    ("caller", "expected"),
    [
        ({}, UNAUTHENTICATED),
        ({"ACTORQ_TOKEN": "not-the-right-token-at-all"}, UNAUTHENTICATED),
        (AS_ACTOR, PERMISSION_DENIED),
        (AS_READER, PERMISSION_DENIED),
    ],
    ids=["no-token", "wrong-token", "actor", "reader"],
)
def test_a_publish_without_the_learner_role_is_refused_and_serves_nothing(
    servers: dict[str, ServiceProcess], caller: dict[str, str], expected: grpc.StatusCode
) -> None:
    address = servers["quantizer"].address
    with channel(address, env=AS_READER) as ch:
        before = QuantizerClient(ch).list_models()
    assert refused(lambda: publish(address, caller, 2**62)) == expected
    with channel(address, env=AS_READER) as ch:
        after = QuantizerClient(ch).list_models()
    assert after.versions_built == before.versions_built
    assert after.rejected_uploads == before.rejected_uploads  # never reached the servicer


def test_the_learner_publishes_and_actors_and_readers_pull(
    servers: dict[str, ServiceProcess],
) -> None:
    address = servers["quantizer"].address
    with channel(address, env=AS_READER) as ch:
        served = max((a.version for a in QuantizerClient(ch).list_models().artifacts), default=0)
    publish(address, AS_LEARNER, served + 1)
    for env in (AS_ACTOR, AS_READER):
        with dial(address, env) as ch:
            model = QuantizerClient(ch).fetch("int8")
            assert model is not None and model.artifact.version == served + 1


def test_health_answers_anyone_and_reflection_needs_a_token(
    servers: dict[str, ServiceProcess],
) -> None:
    address = servers["replay"].address
    with channel(address, env={}) as ch:
        status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as info:
            ProtoReflectionDescriptorDatabase(ch).get_services()
        assert info.value.code() == UNAUTHENTICATED
    with channel(address, env=AS_READER) as ch:
        assert "actorq.v1.ReplayService" in ProtoReflectionDescriptorDatabase(ch).get_services()
    # The health CLI (compose healthchecks) with no token at all.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTORQ_TOKEN")}
    cli = [sys.executable, "-m", "commands.cli", "health", address]
    assert subprocess.run(cli, cwd=ROOT, env=env, timeout=60).returncode == 0


def test_refusals_are_logged_without_the_token(servers: dict[str, ServiceProcess]) -> None:
    with replay_as(servers, {"ACTORQ_TOKEN": "a-guessed-token-that-fails"}) as ch:
        refused(lambda: ReplayClient(ch).stats())
    log = servers["replay"].log()
    assert "refused a call from" in log
    assert "a-guessed-token-that-fails" not in log
    for token in ROLE_TOKENS.values():
        assert token not in log


# --- every service with its own tokens, as a deployment gives them ------------------


def test_a_run_where_each_process_holds_only_its_own_tokens_trains(
    service_factory: Callable[..., ServiceProcess],
) -> None:
    replay = service_factory("replay", ["--min-size-to-sample", "64"], env=ROLE_TOKENS)
    quantizer = service_factory("quantizer", [], env=ROLE_TOKENS)
    run = [
        *("--env", "CartPole-v1"),
        *("--replay-address", replay.address, "--quantizer-address", quantizer.address),
    ]
    learner = service_factory(
        "learner",
        [*run, "--dqn-batch-size", "32", "--publish-every-steps", "20"],
        env={**AS_LEARNER, **AS_READER},
    )
    actor = service_factory("actor", [*run, "--chunk-size", "16"], env={**AS_ACTOR, **AS_READER})
    deadline = time.monotonic() + 90
    with channel(learner.address, env=AS_READER) as lc, channel(actor.address, env=AS_READER) as ac:
        while True:
            status, acting = LearnerClient(lc).status(), ActorClient(ac).status()
            if status.learner_steps >= 40 and status.published_version >= 2:
                break
            assert time.monotonic() < deadline, (status, acting, learner.log_tail())
            time.sleep(0.5)
        assert acting.transitions_sent > 0 and acting.model_version >= 1
        assert status.publishes_refused == 0 and status.error == ""
    for svc in (replay, quantizer):
        assert "refused a call" not in svc.log()


def test_actorq_train_with_a_token_in_the_environment_authenticates_every_call(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "ACTORQ_TOKEN": SHARED_TOKEN}
    out = tmp_path / "run"
    res = train(
        out,
        *("--env", "CartPole-v1", "--actors", "1", "--max-env-steps", "1500"),
        *("--learner-device", "cpu"),
        env=env,
    )
    assert res.returncode == 0, res.stderr
    assert "core budget:" in res.stderr and "(device cpu)" in res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stop_reason"] == "max_env_steps"
    assert summary["eval"]["int8"] is not None  # the launcher's evaluator pulled models
    logs = {p.name: p.read_text() for p in (out / "logs").glob("*.log")}
    assert "callers need a token" in logs["replay.log"]
    assert not [name for name, text in logs.items() if "refused a call" in text]
    assert "on cpu (" in logs["learner.log"]


# --- mutual TLS ----------------------------------------------------------------------


@pytest.fixture
def mtls_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The variables of a deployment with mutual TLS, set here too (the fixtures'
    health checks dial from this process)."""
    cert, key = make_cert(tmp_path)  # its own CA: it signs itself
    env = {
        tls.TLS_CERT_ENV: str(cert),
        tls.TLS_KEY_ENV: str(key),
        tls.TLS_CA_ENV: str(cert),
        tls.TLS_CLIENT_CA_ENV: str(cert),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def test_mutual_tls_refuses_a_client_without_a_certificate_and_serves_one_with(
    mtls_env: dict[str, str], service_factory: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    replay = service_factory("replay", env=mtls_env)
    with channel(replay.address, env=mtls_env) as ch:  # presents ACTORQ_TLS_CERT/KEY
        assert ReplayClient(ch).insert([transitions(2)]).size == 2
    no_cert = {tls.TLS_CA_ENV: mtls_env[tls.TLS_CA_ENV]}  # trusts the server, shows nothing
    with channel(replay.address, env=no_cert) as ch:
        assert refused(lambda: ReplayClient(ch).insert([transitions(2)])) == (
            grpc.StatusCode.UNAVAILABLE
        )
    other = tmp_path / "other"
    other.mkdir()
    other_cert, other_key = make_cert(other)  # a certificate the client CA did not sign
    wrong = {
        **no_cert,
        tls.TLS_CLIENT_CERT_ENV: str(other_cert),
        tls.TLS_CLIENT_KEY_ENV: str(other_key),
    }
    with channel(replay.address, env=wrong) as ch:
        assert refused(lambda: ReplayClient(ch).stats()) == grpc.StatusCode.UNAVAILABLE
    with channel(replay.address, env=mtls_env) as ch:
        assert ReplayClient(ch).stats().size == 2


def test_a_client_ca_without_a_server_certificate_is_refused() -> None:
    with pytest.raises(tls.TLSConfigError, match="needs a TLS server"):
        tls.server_credentials({tls.TLS_CLIENT_CA_ENV: "/ca.pem"})


def test_a_service_with_an_unusable_token_stops_with_one_sentence() -> None:
    env = {**os.environ, "ACTORQ_TOKEN": "short"}
    cmd = [sys.executable, "-m", "commands.cli", "serve", "replay", "--port", "0"]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "actorq serve replay: error: ACTORQ_TOKEN must be at least 16 characters" in res.stderr
    assert "Traceback" not in res.stderr
