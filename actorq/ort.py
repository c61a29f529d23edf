"""onnxruntime sessions configured the way actors need them.

One intra-op thread and no spinning: each actor owns one core's worth of
work, and a spinning thread pool would burn CPU the env step needs.
"""

from __future__ import annotations

import onnxruntime as ort


def make_session(
    model: bytes, threads: int = 1, optimized_model_path: str | None = None
) -> ort.InferenceSession:
    """An InferenceSession on the CPU from ONNX bytes.

    ``optimized_model_path`` writes the graph after onnxruntime's fusions (to
    check which kernels, e.g. int8 ones, a model really runs).
    """
    opts = ort.SessionOptions()
    if optimized_model_path is not None:
        opts.optimized_model_filepath = optimized_model_path
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
