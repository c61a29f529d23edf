"""Check every artifact before it is served: ONNX-valid, finite, close to fp32.

Each model is loaded with onnxruntime (``actorq.ort.make_session``, the
actors' settings) and run on the calibration batch and on a probe set that
spans the observation space (``ObservationRange``, ``probe_rows``): a model
whose outputs are finite on the learner's recent observations can still
overflow on others (huge but finite weights), so a non-finite output on
either rejects the whole version. int8 is compared with fp32 (on the
calibration rows) by largest absolute output error and action agreement: the
same greedy (argmax) action for Q-value outputs; for continuous policies,
every action dimension within ACTION_TOLERANCE of the action range of the
fp32 action.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from actorq.network import OBS_INPUT
from actorq.ort import make_session

# Continuous actions "agree" when every dimension is within this fraction of its
# range (0.05 of [-1, 1] is 0.1): about the smallest change that moves a
# torque-controlled body visibly differently over one control step.
ACTION_TOLERANCE = 0.05


class ValidationError(ValueError):
    """An artifact that must not be served; the message says which and why."""


@dataclass(frozen=True)
class Comparison:
    """How a quantized model's outputs compare with fp32 on the calibration batch."""

    max_abs_err: float
    action_agreement: float
    samples: int


def check_onnx(model: bytes, label: str) -> None:
    """onnx.checker.check_model on the serialized bytes themselves (parsing them into a
    ModelProto first, which check_model serializes again, took 80 ms against 4.5 ms at
    2048x2048x2048); ValidationError naming label, also for bytes that are no model."""
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise ValidationError(f"{label} model fails onnx.checker: {err}") from err
    except ValueError as err:  # bytes the checker cannot parse as a ModelProto
        raise ValidationError(f"{label} model is not a serialized ONNX model: {err}") from err


def run_model(
    model: bytes,
    obs: np.ndarray,
    output: str,
    label: str,
    probes: np.ndarray | None = None,
) -> np.ndarray:
    """Run model on obs (and probes); its outputs on obs. ValidationError if any
    output is NaN or inf, on either."""
    session = make_session(model)
    values = _finite(session, obs, output, f"{label} model", "the calibration batch")
    if probes is not None and len(probes):
        _finite(
            session,
            probes,
            output,
            f"{label} model",
            f"{len(probes)} probe observations spanning up to {PROBE_SCALES[-1]:g}x the "
            "observed range",
        )
    return values


def _finite(session: Any, obs: np.ndarray, output: str, what: str, where: str) -> np.ndarray:
    (values,) = session.run([output], {OBS_INPUT: obs})
    values = np.asarray(values)
    if not np.isfinite(values).all():
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        raise ValidationError(
            f"{what} produced {bad} non-finite {output} values on {where} (NaN or inf); "
            "it will not be served"
        )
    return values


# Probe boxes: the observed range around its centre, then widened 10x and 100x: a
# model is refused if observations up to 100x past what calibration saw overflow
# it. No sane policy is within 100x of float32's 3.4e38 (one with weights ~1e20,
# finite on small calibration observations, is), so this refuses nothing useful.
PROBE_SCALES = (1.0, 10.0, 100.0)
# Random vertices per box (a ReLU MLP's largest output on a box is at a vertex).
PROBE_VERTICES = 16


class ObservationRange:
    """Running per-dimension min/max of the observations calibration has seen.

    Updated from uploads that passed (``note``), so a rejected upload cannot
    widen what later ones are checked against.
    """

    def __init__(self) -> None:
        self.low: np.ndarray | None = None
        self.high: np.ndarray | None = None

    def bounds(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The range seen so far joined with obs' (obs float32 [rows, dim])."""
        low, high = obs.min(axis=0), obs.max(axis=0)
        if self.low is not None and self.high is not None and self.low.shape == low.shape:
            low, high = np.minimum(low, self.low), np.maximum(high, self.high)
        return low, high

    def note(self, obs: np.ndarray) -> None:
        """Take obs' range into the running one (a new obs_dim starts over)."""
        self.low, self.high = self.bounds(obs)


def probe_rows(low: np.ndarray, high: np.ndarray, seed: int = 0) -> np.ndarray:
    """Fixed probe observations spanning [low, high] and its widenings around the centre
    (PROBE_SCALES): per box its centre, its two extreme corners and PROBE_VERTICES random
    vertices (seeded: the same range gives the same probes)."""
    low64, high64 = low.astype(np.float64), high.astype(np.float64)
    centre, half = (low64 + high64) / 2, np.maximum((high64 - low64) / 2, 1e-3)
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(PROBE_VERTICES, low.size))
    signs = np.vstack([np.zeros(low.size), -np.ones(low.size), np.ones(low.size), signs])
    rows = [centre + signs * half * scale for scale in PROBE_SCALES]
    # Clipped into float32: a probe itself must be a valid observation.
    limit = float(np.finfo(np.float32).max)
    return np.clip(np.vstack(rows), -limit, limit).astype(np.float32)


def compare(
    reference: np.ndarray, quantized: np.ndarray, action_range: np.ndarray | None = None
) -> Comparison:
    """Largest |quantized - reference| and the fraction of rows that agree.

    Q-values (``action_range`` None) agree when their argmax does; actions
    when every dimension is within ACTION_TOLERANCE * action_range of fp32.
    """
    diff = np.abs(quantized.astype(np.float64) - reference)
    err = float(diff.max()) if reference.size else 0.0
    if action_range is None:
        agree = float(np.mean(quantized.argmax(axis=1) == reference.argmax(axis=1)))
    else:
        close = diff <= ACTION_TOLERANCE * np.asarray(action_range, np.float64)
        agree = float(np.mean(close.all(axis=1)))
    return Comparison(max_abs_err=err, action_agreement=agree, samples=int(reference.shape[0]))
