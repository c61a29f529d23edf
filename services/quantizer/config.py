"""Quantizer service configuration (flags, ACTORQ_* env, or the ``quantizer:`` file section)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TypedDict

from actorq.config import ConfigError, opt
from actorq.network import PRECISIONS

# The int8 methods ``quantize.quantize_int8`` knows. Named here, not there, so that checking
# a config (the launcher does it for every run) does not import onnxruntime's quantizer.
INT8_METHODS: tuple[str, ...] = ("dynamic", "static_qdq")

DEFAULT_PORT = 50052


class Int8Options(TypedDict):
    """quantize_int8's keyword arguments that come from the config."""

    per_channel: bool
    fp32_input_layer: bool
    reduce_range: bool


@dataclass
class QuantizerConfig:
    """Everything the quantizer service can be told; defaults are the tested setting."""

    host: str = opt("127.0.0.1", "interface to listen on (0.0.0.0 for all)")
    port: int = opt(DEFAULT_PORT, "gRPC port (0 picks a free one)")
    precisions: list[str] = opt(
        list(PRECISIONS),
        "precisions built for every policy version when the upload names none; "
        "an upload may ask for a subset of these",
    )
    int8_method: str = opt(
        "dynamic",
        "how int8 models are made: 'dynamic' (int8 weights, activations quantized per "
        "call; onnxruntime runs DynamicQuantizeMatMul, u8s8 VNNI) or 'static_qdq' "
        "(activation ranges from calibration obs; one QGemm per layer with bias and ReLU "
        "fused). Median us per call, 1 intra-op thread, weights cache-hot (python -m "
        "services.quantizer.bench), AMD EPYC Zen 4 with AVX-512 VNNI, obs 4 / 2 actions, "
        "fp32/dynamic/static_qdq, batch 1: 64x64 6.7/8.8/8.4, 256x256 9.8/9.8/9.4, "
        "2048x2048x2048 1060/125/123 (8.5x); batch 16 at 2048^3 3369/676/665 (5x); the "
        "per-call floor (Identity graph) is 5.2. Static is 1-1.5%% faster but clips "
        "activations outside the calibration range (2048^3: max |err| / max |q| 1%% for "
        "dynamic vs 29%% static on fresh obs of the calibrated scale, 93%% at 10x scale) "
        "and needs calibration obs; dynamic needs none, hence the default",
    )
    per_channel: bool = opt(
        False,
        "int8 weight scales per output channel instead of per tensor (measured: no "
        "accuracy gain on DQN MLPs; 2048^3 batch 1 15%% slower dynamic, 25%% static)",
    )
    reduce_range: bool = opt(
        True,
        "store int8 weights in 7 bits. onnxruntime's u8s8 kernel on CPUs without VNNI "
        "(AVX2 only) sums pairs of uint8 x int8 products in int16 (VPMADDUBSW), which "
        "saturates with full-range weights; 7-bit weights cannot overflow. Measured on an "
        "AVX2-only AMD EPYC (Zen 3), 64x64 DQN MLP: max |Q err| 0.080 -> 0.0065, greedy "
        "agreement 0.977 -> 0.996; 2048^3 batch 1 183 vs 182 us (no cost). Artifacts run "
        "on whatever CPU the actors have, so this is on everywhere; on VNNI CPUs false "
        "gains one bit of weight precision",
    )
    fp32_input_layer: bool = opt(
        True,
        "keep the first layer (raw observations -> hidden) in fp32: per-tensor uint8 "
        "quantization of raw observations loses small-range features (CartPole's pole "
        "angle); measured on a trained CartPole Q-net, max |err| 1.9 -> 0.5; the layer is "
        "<0.1%% of a 2048^3 net's weights and costs no measurable time",
    )
    calibration_size: int = opt(
        256,
        "observation rows used to calibrate static_qdq and to validate every artifact "
        "against fp32 (extra uploaded rows are ignored; synthetic rows when none are sent)",
    )
    max_upload_bytes: int = opt(
        512 * 1024 * 1024,
        "largest PublishWeights stream accepted (header plus declared tensor bytes); "
        "bigger uploads are refused with RESOURCE_EXHAUSTED before being buffered",
    )
    min_action_agreement: float = opt(
        0.0,
        "reject a version whose int8 greedy actions agree with fp32 on fewer than this "
        "fraction of calibration rows (continuous policies: rows with every action within "
        "0.05 of its range of fp32's; 0 disables; non-finite outputs are always rejected)",
    )
    max_wait_s: float = opt(
        600.0, "longest GetModel long-poll a client may ask for (wait_s above it is refused)"
    )
    max_workers: int = opt(
        16,
        "gRPC handler threads for short calls (health, ListModels); long polls and "
        "publishes have budgets of their own (max_model_polls, max_publishes) on top, so "
        "they can never take these",
    )
    max_model_polls: int = opt(
        1024,
        "GetModel calls served at once (each waiting long poll holds a thread: one per "
        "actor and precision polled); more are refused with RESOURCE_EXHAUSTED, which "
        "actors back off from and retry",
    )
    max_publishes: int = opt(
        2,
        "PublishWeights streams served at once (builds run one at a time anyway); more are "
        "refused with RESOURCE_EXHAUSTED, which the learner backs off from and retries",
    )
    max_version_step: int = opt(
        1000,
        "how far one publish may move policy_version past the served one (the learner "
        "moves it by 1; after a restart from an older checkpoint it skips to the served "
        "one first). A jump further is refused, so no caller can push the version out of "
        "the learner's reach; the first publish a fresh quantizer sees is not limited "
        "(it may continue a run whose versions are already high)",
    )
    workdir: str = opt(
        "",
        "directory for onnxruntime.quantization's temporary files (empty: system temp dir)",
    )

    def int8_options(self) -> Int8Options:
        """The settings besides int8_method that shape an int8 model (quantize_int8's
        keyword arguments): what the service builds, and benchmarks record."""
        return Int8Options(
            per_channel=self.per_channel,
            fp32_input_layer=self.fp32_input_layer,
            reduce_range=self.reduce_range,
        )

    def __post_init__(self) -> None:
        if not self.precisions:
            raise ConfigError(f"precisions is empty; name at least one of {list(PRECISIONS)}")
        unknown = [p for p in self.precisions if p not in PRECISIONS]
        if unknown:
            raise ConfigError(f"precisions {unknown} unknown; supported: {list(PRECISIONS)}")
        if len(set(self.precisions)) != len(self.precisions):
            raise ConfigError(f"precisions {self.precisions} lists a precision twice")
        if self.int8_method not in INT8_METHODS:
            raise ConfigError(
                f"int8_method {self.int8_method!r} unknown; use one of {list(INT8_METHODS)}"
            )
        if self.calibration_size < 1:
            raise ConfigError(f"calibration_size must be at least 1, got {self.calibration_size}")
        if self.max_upload_bytes < 1024:
            raise ConfigError(
                f"max_upload_bytes {self.max_upload_bytes} is too small for any upload; "
                "use at least 1024"
            )
        if not 0.0 <= self.min_action_agreement <= 1.0:
            raise ConfigError(
                f"min_action_agreement must be in [0, 1], got {self.min_action_agreement}"
            )
        if not (math.isfinite(self.max_wait_s) and self.max_wait_s >= 0):
            raise ConfigError(f"max_wait_s must be a finite number >= 0, got {self.max_wait_s}")
        for name in ("max_workers", "max_model_polls", "max_publishes", "max_version_step"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.workdir and not os.path.isdir(self.workdir):
            raise ConfigError(f"workdir {self.workdir!r} is not an existing directory")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is outside 0..65535")
