"""Check every artifact before it is served: ONNX-valid, finite, close to fp32.

Each model is loaded with onnxruntime (``actorq.ort.make_session``, the
actors' settings) and run on the calibration batch. A non-finite output
rejects the whole version; int8 is compared with fp32 by largest absolute
output error and action agreement: the same greedy (argmax) action for Q-value
outputs; for continuous policies, every action dimension within
ACTION_TOLERANCE of the action range of the fp32 action.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    """onnx.checker.check_model on serialized bytes; ValidationError naming label."""
    try:
        onnx.checker.check_model(onnx.load_from_string(model))
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise ValidationError(f"{label} model fails onnx.checker: {err}") from err


def run_model(model: bytes, obs: np.ndarray, output: str, label: str) -> np.ndarray:
    """Run model on obs; ValidationError if any output is NaN or inf."""
    session = make_session(model)
    (values,) = session.run([output], {OBS_INPUT: obs})
    values = np.asarray(values)
    if not np.isfinite(values).all():
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        raise ValidationError(
            f"{label} model produced {bad} non-finite {output} values on the calibration "
            "batch (NaN or inf); it will not be served"
        )
    return values


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
