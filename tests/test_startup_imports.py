"""What each process of `actorq train` imports before it serves: start-up is CPU-bound
(every process starts at once on shared cores), so a heavy module a process does not
use delays every service. Checked on the modules loaded, not on a clock."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Never needed to start: torch is the learner's alone, dm_control/MuJoCo only for dmc:
# envs, codecarbon (and its pandas) loads on the carbon thread, prometheus_client only
# where a metrics port is set, rich only in the launcher's live view.
EVERYWHERE = ("torch", "dm_control", "mujoco", "codecarbon", "pandas", "prometheus_client")
NOT_IMPORTED = {
    # The launcher: onnxruntime only once it evaluates (after every service started).
    "commands.train.run": (*EVERYWHERE, "onnxruntime", "onnx"),
    "services.replay.server": (*EVERYWHERE, "rich", "onnxruntime", "onnx", "gymnasium"),
    "services.quantizer.server": (*EVERYWHERE, "rich", "gymnasium"),
    "services.actor.server": (*EVERYWHERE, "rich", "onnx"),
}


def printed(code: str) -> list[str]:
    """The words a fresh interpreter prints running code (which must succeed)."""
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    return res.stdout.split()


@pytest.mark.parametrize("module", sorted(NOT_IMPORTED))
def test_process_entry_imports_nothing_it_does_not_need_to_start(module: str) -> None:
    code = (
        f"import sys, commands.cli, {module}; "
        f"print(' '.join(m for m in {NOT_IMPORTED[module]!r} if m in sys.modules))"
    )
    imported = printed(code)
    assert imported == [], f"{module} imports {' '.join(imported)}"


def test_a_learner_builds_its_optimizer_at_the_first_update_not_before() -> None:
    """Building a torch optimizer imports torch._dynamo (about 1.1 CPU-s): a learner's
    algorithm is made, and can publish, before that; its first update still trains."""
    code = (
        "import sys, numpy as np\n"
        "from services.learner.algorithms import EnvSpaces, random_transitions\n"
        "from services.learner.dqn import DQN\n"
        "from services.learner.hyperparams import DQNConfig\n"
        "agent = DQN(4, 2, DQNConfig(hidden_sizes=[16]), seed=3)\n"
        "agent.policy_weights()\n"
        "print('torch._dynamo' in sys.modules)\n"
        "agent.update(random_transitions(EnvSpaces(4, num_actions=2), 32, np.random.default_rng(0)))\n"
        "print('torch._dynamo' in sys.modules, agent.steps)\n"
    )
    assert printed(code) == ["False", "True", "1"]


def test_a_learner_warms_up_on_a_copy_and_leaves_its_agent_untouched() -> None:
    """Learner.warm_up pays the first update's one-time costs (the optimizer's
    torch._dynamo import among them) on a throwaway copy: the agent keeps its step
    count and weights, and builds no optimizer of its own."""
    code = (
        "import sys, numpy as np\n"
        "from services.learner.config import LearnerConfig\n"
        "from services.learner.learner import Learner\n"
        "cfg = LearnerConfig(env='CartPole-v1', algo='dqn')\n"
        "cfg.dqn.hidden_sizes, cfg.dqn.batch_size = [16], 32\n"
        "learner = Learner(cfg, obs_dim=4, num_actions=2)\n"
        "before = learner.agent.policy_weights()\n"
        "print('torch._dynamo' in sys.modules)\n"
        "learner.warm_up()\n"
        "after = learner.agent.policy_weights()\n"
        "same = all(np.array_equal(before[k], after[k]) for k in before)\n"
        "print('torch._dynamo' in sys.modules, learner.steps, same,\n"
        "      learner.agent.optimizer._adam is None)\n"
    )
    assert printed(code) == ["False", "True", "0", "True", "True"]
