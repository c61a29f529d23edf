"""The quantizer builds what the learner-quantizer-actor contract (actorq.network) says."""

from __future__ import annotations

import onnx
import pytest
from test_d4pg_actor import policy_spec, policy_weights
from test_quantizer_core import SPEC, upload_messages

from actorq import network
from services.quantizer import graph
from services.quantizer.bench import torch_like_weights
from services.quantizer.config import QuantizerConfig
from services.quantizer.core import Quantizer
from services.quantizer.upload import assemble


def kind_in_metadata(model: bytes) -> str | None:
    props = {p.key: p.value for p in onnx.load_from_string(model).metadata_props}
    return props.get(network.METADATA_KIND)


def test_the_graph_registry_builds_exactly_the_contracts_kinds() -> None:
    assert set(graph.KINDS) == set(network.KINDS)
    for name, kind in graph.KINDS.items():
        assert kind.contract is network.KINDS[name]


def test_every_activation_the_contract_allows_has_an_onnx_op() -> None:
    for kind in network.KINDS.values():
        assert set(kind.activations) <= set(graph.ACTIVATION_OPS), kind.name


def test_a_graph_reads_the_contracts_input_and_writes_its_kinds_output() -> None:
    spec = policy_spec(3, [-2.0], [2.0])
    model = graph.build_onnx(spec, policy_weights(spec))
    assert [i.name for i in model.graph.input] == [network.OBS_INPUT]
    assert [o.name for o in model.graph.output] == [network.D4PG_POLICY.output]


@pytest.mark.parametrize("int8_method", ["dynamic", "static_qdq"])
@pytest.mark.parametrize("kind", ["dqn_mlp", "d4pg_policy"])
def test_every_served_artifact_names_its_kind_in_metadata(kind: str, int8_method: str) -> None:
    if kind == "dqn_mlp":
        spec, weights = SPEC, torch_like_weights(SPEC)
    else:
        spec = policy_spec(8, [-1.0, -1.0], [1.0, 1.0])
        weights = policy_weights(spec)
    core = Quantizer(QuantizerConfig(calibration_size=32, int8_method=int8_method))
    core.publish(assemble(upload_messages(weights, spec=spec), ["fp32", "int8"], 1 << 20))
    served = {a.meta.precision: a.data for a in core.registry.all_latest()}
    assert {p: kind_in_metadata(data) for p, data in served.items()} == {
        "fp32": kind,
        "int8": kind,
    }
