"""A served ONNX policy (fp32 or int8) run with onnxruntime on the CPU: no torch.

Two kinds of graph come from the quantizer (``actorq.network``), told apart by
the kind the model's metadata names (``METADATA_KIND``), or, in an ONNX file
without it, by the name of its output:

- ``q_values`` float32 [B, num_actions] (``dqn_mlp``): ``act`` is the argmax;
- ``action`` float32 [B, action_dim] (``d4pg_policy``): the deterministic
  action, already mapped into the env's bounds; ``action`` returns it.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from actorq import network
from actorq.envs import EnvInfo
from actorq.ort import make_session


class PolicyError(ValueError):
    """ONNX bytes that are not a usable obs -> Q-values / action policy."""


class RandomPolicy:
    """Uniformly random discrete actions: what an actor steps with before the first served
    policy when ``random_until_model`` is set. Version 0, no bytes; seeded, so a run repeats.

    With epsilon starting at 1.0 the first policy's greedy action is almost never taken
    anyway, and the learner samples nothing before replay holds ``min_size_to_sample``
    transitions: stepping at once spares the actors the learner's start (torch) instead.
    """

    version = 0
    size_bytes = 0
    precision = "random"

    def __init__(self, num_actions: int, seed: int) -> None:
        if num_actions < 1:
            raise PolicyError(f"a random policy needs discrete actions, got {num_actions}")
        self.num_actions = num_actions
        self._rng = np.random.default_rng(seed)

    def act(self, obs: np.ndarray) -> int:
        """A uniformly random action (the observation is not looked at)."""
        return int(self._rng.integers(self.num_actions))

    def action(self, obs: np.ndarray) -> np.ndarray:
        """Continuous actions have no random stand-in: refused."""
        raise PolicyError("a random policy acts only for discrete actions")


class OnnxPolicy:
    """A policy over an ONNX graph ``obs [B, obs_dim] -> q_values [B, A]`` or ``action [B, A]``.

    ``act`` (discrete) and ``action`` (continuous) are the step loop's hot
    path: they write the observation into a preallocated input row bound to
    the session (I/O binding over numpy memory), so a call allocates no arrays
    and no feed dict. That buffer makes them single-threaded: give each thread
    its own policy.
    """

    def __init__(self, model_bytes: bytes, version: int, precision: str, threads: int = 1) -> None:
        self.version = int(version)
        self.precision = precision
        self.size_bytes = len(model_bytes)
        try:
            self.session = make_session(model_bytes, threads)
        except Exception as err:  # onnxruntime raises its own exception types
            raise PolicyError(f"model v{version} ({precision}) does not load: {err}") from err
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise PolicyError(
                f"model v{version}: expected one input and a q_values or action output, got "
                f"inputs {[i.name for i in inputs]} and outputs {[o.name for o in outputs]}"
            )
        shape = inputs[0].shape
        if len(shape) != 2 or not isinstance(shape[1], int):
            raise PolicyError(f"model v{version}: input shape {shape}, expected [batch, obs_dim]")
        self.input_name = inputs[0].name
        self.output_name = outputs[0].name
        kind = self._network_kind()
        # Graphs of no known kind are read as Q-values, as any non-action output always was.
        self.continuous = kind is not None and kind.continuous
        self.obs_dim = int(shape[1])
        self._outputs = [self.output_name]
        # First run also warms the session up, so a swap's load time includes it.
        probe = self.q_values(np.zeros((1, self.obs_dim), np.float32))
        if probe.ndim != 2 or probe.shape[0] != 1:
            raise PolicyError(
                f"model v{version}: output shape {list(probe.shape)} for one row, "
                f"expected [1, {'action_dim' if self.continuous else 'num_actions'}]"
            )
        width = int(probe.shape[1])
        # Exactly one of the two is non-zero.
        self.num_actions = 0 if self.continuous else width
        self.action_dim = width if self.continuous else 0
        self._row = np.zeros((1, self.obs_dim), np.float32)
        self._q = np.zeros((1, width), np.float32)
        self._binding = self._bind()

    def _network_kind(self) -> network.Kind | None:
        """The kind the model's metadata names, else the one its output name implies."""
        metadata = self.session.get_modelmeta().custom_metadata_map
        named = metadata.get(network.METADATA_KIND)
        if named is None:
            return network.kind_of_output(self.output_name)
        try:
            kind = network.kind(named)
        except ValueError as err:
            raise PolicyError(f"model v{self.version}: {err}") from None
        if kind.output != self.output_name:
            raise PolicyError(
                f"model v{self.version} is a {kind.name} by its metadata, whose output is "
                f"{kind.output!r}, but its graph outputs {self.output_name!r}"
            )
        return kind

    def _bind(self) -> ort.IOBinding | None:
        """Bind the input row and output buffer once; None falls back to session.run."""
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_name, ort.OrtValue.ortvalue_from_numpy(self._row))
        binding.bind_ortvalue_output(self.output_name, ort.OrtValue.ortvalue_from_numpy(self._q))
        # Check the binding really reads and writes our numpy memory (it does on
        # CPU today); if a future onnxruntime copied instead, use session.run.
        check = np.linspace(-1.0, 1.0, self.obs_dim, dtype=np.float32)
        self._row[0] = check
        self.session.run_with_iobinding(binding)
        expected = self.q_values(check[None, :])
        if not np.array_equal(self._q, expected):
            return None
        return binding

    def describe(self) -> str:
        """``4 observations to 2 actions`` / ``5 observations to 1-dim actions``."""
        if self.continuous:
            return f"{self.obs_dim} observations to {self.action_dim}-dim actions"
        return f"{self.obs_dim} observations to {self.num_actions} actions"

    def q_values(self, obs_batch: np.ndarray) -> np.ndarray:
        """The graph's output for observations [B, obs_dim]: Q-values [B, num_actions]
        (discrete) or actions [B, action_dim] (continuous)."""
        batch = np.asarray(obs_batch, dtype=np.float32)
        if batch.ndim != 2 or batch.shape[1] != self.obs_dim:
            raise ValueError(
                f"obs_batch has shape {list(batch.shape)}, expected [batch, {self.obs_dim}]"
            )
        out: np.ndarray = self.session.run(self._outputs, {self.input_name: batch})[0]
        return out

    actions = q_values

    def act(self, obs: np.ndarray) -> int:
        """Greedy action for one observation (discrete policies; ties go to the lowest index)."""
        self._row[0] = obs
        if self._binding is not None:
            self.session.run_with_iobinding(self._binding)
            return int(self._q[0].argmax())
        return int(self.session.run(self._outputs, {self.input_name: self._row})[0][0].argmax())

    def action(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic action [action_dim] for one observation (continuous policies).

        The result is this policy's output buffer: the next call overwrites
        it, so copy it (or derive a new array from it) before keeping it.
        """
        self._row[0] = obs
        if self._binding is not None:
            self.session.run_with_iobinding(self._binding)
            return self._q[0]
        out: np.ndarray = self.session.run(self._outputs, {self.input_name: self._row})[0][0]
        return out


def check_fits(policy: OnnxPolicy, info: EnvInfo) -> None:
    """PolicyError unless the policy's input and output fit the env's spaces."""
    if not policy.continuous and not info.continuous:
        if policy.obs_dim != info.obs_dim or policy.num_actions != info.num_actions:
            raise PolicyError(
                f"model v{policy.version} maps {policy.obs_dim} observations to "
                f"{policy.num_actions} actions, but {info.env_id} has {info.obs_dim} "
                f"and {info.num_actions}"
            )
        return
    if (
        policy.continuous != info.continuous
        or policy.obs_dim != info.obs_dim
        or policy.action_dim != info.action_dim
    ):
        raise PolicyError(
            f"model v{policy.version} maps {policy.describe()}, but {info.env_id} has "
            f"{info.obs_dim} observations and {info.describe_actions()}"
        )
