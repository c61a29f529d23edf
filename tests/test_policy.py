"""DIR/policy/, ``actorq eval`` and ``actorq export`` on a tiny CartPole-shaped model built
here (no training, no service): cards, atomic writes, best/latest, eval, export, README."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from actorq.clients import FetchedModel
from actorq.v1 import common_pb2
from commands import eval as eval_cmd
from commands import export as export_cmd
from commands import video
from commands.train.policy import (
    PolicyDir,
    PolicyFileError,
    eval_seed,
    locate,
    read_card,
    write_atomic,
)
from commands.train.summary import EvalRecord
from services.actor.evaluate import evaluate
from services.actor.policy import OnnxPolicy
from services.quantizer.graph import build_onnx, expected_tensors

ROOT = Path(__file__).resolve().parents[1]
SPEC = common_pb2.NetworkSpec(
    kind="dqn_mlp", obs_dim=4, hidden_sizes=[8], output_dim=2, activation="relu"
)
CARD_FIELDS = {
    "env", "algo", "precision", "policy_version", "learner_step", "observation_space",
    "action_space", "quantization", "evaluation", "sha256", "actorq_version",
    "onnxruntime_version",
}  # fmt: skip


def model(version: int, precision: str, seed: int = 0) -> FetchedModel:
    """A CartPole-shaped Q-network as the quantizer would serve it (fp32 graph either way)."""
    rng = np.random.default_rng(seed)
    weights = {
        name: rng.normal(0, 0.5, shape).astype(np.float32)
        for name, shape in expected_tensors(SPEC).items()
    }
    data = build_onnx(SPEC, weights).SerializeToString()
    quant = common_pb2.QuantizationReport(
        method="dynamic" if precision == "int8" else "none",
        max_abs_err=0.01,
        action_agreement=0.99,
        calibration_samples=256,
        calibration_source="replay",
    )
    artifact = common_pb2.ModelArtifact(
        version=version,
        precision=precision,
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        network=SPEC,
        quantization=quant,
        learner_step=100 * version,
    )
    return FetchedModel(artifact, data)


def record(version: int, mean: float, precision: str = "int8", early: bool = False) -> EvalRecord:
    return EvalRecord(1.0, version, precision, mean, 3, early, 1000 * version, 0.1)


def both(version: int, seed: int = 0) -> dict[str, FetchedModel]:
    return {p: model(version, p, seed) for p in ("int8", "fp32")}


def policy_dir(run: Path) -> PolicyDir:
    return PolicyDir(run, "CartPole-v1", "dqn", "int8", 0)


# ------------------------------------------------------------------ writing


def test_write_atomic_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "best-int8.onnx"
    write_atomic(path, b"old")
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["best-int8.onnx"]


def test_a_failed_write_keeps_the_old_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "best-int8.onnx"
    write_atomic(path, b"old")

    def broken(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["best-int8.onnx"]


def test_an_evaluated_version_becomes_latest_and_best_with_cards(tmp_path: Path) -> None:
    keeper = policy_dir(tmp_path)
    keeper.keep(both(3), {"int8": record(3, 120.0)})
    names = sorted(p.name for p in (tmp_path / "policy").iterdir())
    assert names == [
        f"{r}-{p}.{s}"
        for r in ("best", "latest")
        for p in ("fp32", "int8")
        for s in ("json", "onnx")
    ]
    card = read_card(tmp_path / "policy" / "best-int8.json")
    assert card is not None and card.keys() >= CARD_FIELDS
    assert card["policy_version"] == 3 and card["learner_step"] == 300
    assert card["observation_space"] == {"type": "box", "shape": [4], "dtype": "float32"}
    assert card["action_space"]["type"] == "discrete" and card["action_space"]["n"] == 2
    assert card["quantization"]["action_agreement"] == pytest.approx(0.99)
    assert card["evaluation"] == {
        "mean_return": 120.0, "episodes": 3, "seed": eval_seed(0, 3), "env_steps": 3000, "t_s": 1.0
    }  # fmt: skip
    onnx = (tmp_path / "policy" / "best-int8.onnx").read_bytes()
    assert card["sha256"] == hashlib.sha256(onnx).hexdigest()
    # The twin was not evaluated: its card says so rather than borrowing int8's score.
    assert read_card(tmp_path / "policy" / "best-fp32.json")["evaluation"] is None  # type: ignore[index]


def test_best_moves_only_when_a_full_evaluation_beats_it(tmp_path: Path) -> None:
    keeper = policy_dir(tmp_path)
    keeper.keep(both(1, seed=1), {"int8": record(1, 100.0)})
    keeper.keep(both(2, seed=2), {"int8": record(2, 90.0)})  # worse
    keeper.keep(both(3, seed=3), {"int8": record(3, 300.0, early=True)})  # not every episode ran
    folder = tmp_path / "policy"
    assert read_card(folder / "best-int8.json")["policy_version"] == 1  # type: ignore[index]
    assert read_card(folder / "best-fp32.json")["policy_version"] == 1  # type: ignore[index]
    assert read_card(folder / "latest-int8.json")["policy_version"] == 3  # type: ignore[index]
    keeper.keep(both(4, seed=4), {"int8": record(4, 150.0)})
    assert read_card(folder / "best-int8.json")["policy_version"] == 4  # type: ignore[index]


def test_a_resumed_run_keeps_the_best_it_already_has(tmp_path: Path) -> None:
    policy_dir(tmp_path).keep(both(5), {"int8": record(5, 200.0)})
    resumed = policy_dir(tmp_path)
    resumed.keep(both(6, seed=6), {"int8": record(6, 150.0)})
    assert read_card(tmp_path / "policy" / "best-int8.json")["policy_version"] == 5  # type: ignore[index]


def test_a_twins_final_evaluation_reaches_the_best_card(tmp_path: Path) -> None:
    keeper = policy_dir(tmp_path)
    keeper.keep(both(2), {"int8": record(2, 200.0)})
    keeper.keep({"fp32": model(2, "fp32")}, {"fp32": record(2, 210.0, "fp32")})
    card = read_card(tmp_path / "policy" / "best-fp32.json")
    assert card is not None and card["evaluation"]["mean_return"] == 210.0


# ------------------------------------------------------------------ finding a policy


def test_locate_finds_the_best_file_of_the_runs_precision(tmp_path: Path) -> None:
    policy_dir(tmp_path).keep(both(2), {"int8": record(2, 50.0)})
    for path in (tmp_path, tmp_path / "policy"):
        assert locate(path).path.name == "best-int8.onnx"
    assert locate(tmp_path, "fp32", "latest").path.name == "latest-fp32.onnx"
    one = locate(tmp_path / "policy" / "latest-int8.onnx")
    assert one.card is not None and one.card["role"] == "latest"


def test_without_a_full_evaluation_there_is_no_best_and_latest_is_used(tmp_path: Path) -> None:
    policy_dir(tmp_path).keep(both(2), {"int8": record(2, 50.0, early=True)})
    assert locate(tmp_path).path.name == "latest-int8.onnx"
    with pytest.raises(PolicyFileError, match="no best-int8.onnx"):
        locate(tmp_path, role="best")


def test_a_directory_without_policies_is_named_in_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(PolicyFileError, match="holds no policy"):
        locate(tmp_path)
    with pytest.raises(PolicyFileError, match="does not exist"):
        locate(tmp_path / "nope")


# ------------------------------------------------------------------ actorq eval


def test_eval_reproduces_the_cards_evaluation_with_its_seed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fetched = model(7, "int8")
    expected = evaluate(OnnxPolicy(fetched.data, 7, "int8"), "CartPole-v1", 4, eval_seed(0, 7))
    rec = EvalRecord(1.0, 7, "int8", expected.mean, 4, False, 0, 0.1)
    policy_dir(tmp_path).keep({"int8": fetched}, {"int8": rec})
    assert eval_cmd.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"mean {expected.mean:.2f}" in out
    assert f"min {min(expected.returns):.2f}" in out and "std " in out and "max " in out
    assert "episode lengths  " + " ".join(map(str, expected.lengths)) in out
    assert len(expected.lengths) == 4 and sum(expected.lengths) == sum(expected.returns)


def test_eval_of_a_bare_onnx_needs_an_env(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "policy.onnx"
    path.write_bytes(model(1, "fp32").data)
    assert eval_cmd.main([str(path)]) == 2
    assert "give --env" in capsys.readouterr().err
    assert eval_cmd.main([str(path), "--env", "CartPole-v1", "--episodes", "2"]) == 0
    assert "2 greedy episodes" in capsys.readouterr().out


def test_eval_of_a_policy_that_does_not_fit_the_env_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "policy.onnx"
    path.write_bytes(model(1, "fp32").data)
    assert eval_cmd.main([str(path), "--env", "Acrobot-v1"]) == 2
    assert "Acrobot-v1 has 6" in capsys.readouterr().err


def test_eval_imports_no_torch(tmp_path: Path) -> None:
    policy_dir(tmp_path).keep(both(1), {"int8": record(1, 10.0)})
    code = (
        "import sys\nfrom commands import cli\n"
        f"assert cli.main(['eval', {str(tmp_path)!r}, '--episodes', '1']) == 0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_video_says_in_one_sentence_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(video.VideoError, match=r"ending in \.mp4"):
        video.Recorder(tmp_path / "run.avi", "CartPole-v1")
    try:
        video.writer_name()
    except video.VideoError as err:
        assert "pip install moviepy" in str(err)
        with pytest.raises(video.VideoError, match="pip install moviepy"):
            video.Recorder(tmp_path / "run.mp4", "CartPole-v1")


# ------------------------------------------------------------------ actorq export + README


def test_export_copies_the_policy_and_card_and_never_overwrites_unasked(tmp_path: Path) -> None:
    policy_dir(tmp_path).keep(both(3), {"int8": record(3, 77.0)})
    out = tmp_path / "policy.onnx"
    assert export_cmd.main([str(tmp_path), "--out", str(out)]) == 0
    assert out.read_bytes() == (tmp_path / "policy" / "best-int8.onnx").read_bytes()
    assert read_card(tmp_path / "policy.json")["file"] == "policy.onnx"  # type: ignore[index]
    assert export_cmd.main([str(tmp_path), "--out", str(out), "--precision", "fp32"]) == 2
    assert out.read_bytes() == (tmp_path / "policy" / "best-int8.onnx").read_bytes()
    args = [str(tmp_path), "--out", str(out), "--precision", "fp32", "--overwrite"]
    assert export_cmd.main(args) == 0
    assert out.read_bytes() == (tmp_path / "policy" / "best-fp32.onnx").read_bytes()


def test_export_refuses_a_file_that_does_not_match_its_card(tmp_path: Path) -> None:
    policy_dir(tmp_path).keep(both(3), {"int8": record(3, 77.0)})
    (tmp_path / "policy" / "best-int8.onnx").write_bytes(model(9, "int8", seed=9).data)
    with pytest.raises(PolicyFileError, match="sha256"):
        export_cmd.export(tmp_path, tmp_path / "p.onnx", None, "best", False)


def readme_snippet() -> str:
    """The Python block of README.md's "Run the exported policy" section, as written."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### Run the exported policy", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README.md: no python block under 'Run the exported policy'"
    return match.group(1)


def run_readme_snippet(folder: Path) -> subprocess.CompletedProcess[str]:
    """Run the README's snippet in ``folder`` (which holds policy.onnx and policy.json)."""
    return subprocess.run(
        [sys.executable, "-c", readme_snippet()], cwd=folder, capture_output=True, text=True
    )


def test_the_readme_snippet_runs_an_exported_policy(tmp_path: Path) -> None:
    lines = [line for line in readme_snippet().splitlines() if line.strip()]
    assert len(lines) <= 12
    policy_dir(tmp_path).keep(both(3), {"int8": record(3, 77.0)})
    assert export_cmd.main([str(tmp_path), "--out", str(tmp_path / "policy.onnx")]) == 0
    res = run_readme_snippet(tmp_path)
    assert res.returncode == 0, res.stderr
    assert re.search(r"return \d+", res.stdout), res.stdout


def test_frames_are_kept_after_reset_and_every_kth_step(tmp_path: Path) -> None:
    from actorq.envs import make_env

    env, _ = make_env("CartPole-v1")
    frames: list[object] = []
    grabber = video.FrameGrabber(env, lambda: np.zeros((2, 2, 3), np.uint8), frames, every=3)
    grabber.reset(seed=0)
    for _ in range(7):
        grabber.step(0)
    grabber.close()
    assert len(frames) == 1 + 7 // 3


def test_a_renderer_that_fails_is_one_sentence_naming_the_fix() -> None:
    from actorq.envs import make_env

    env, _ = make_env("CartPole-v1")

    def broken() -> None:
        raise RuntimeError("no display")

    grabber = video.FrameGrabber(env, broken, [])
    with pytest.raises(video.VideoError, match=r"could not render .*no display"):
        grabber.reset(seed=0)
    grabber.close()


@pytest.mark.skipif(
    not all(__import__("importlib").util.find_spec(m) for m in ("moviepy", "pygame")),
    reason="needs moviepy and pygame (not ActorQ dependencies)",
)
def test_eval_records_a_video_of_its_episodes(tmp_path: Path) -> None:
    policy_dir(tmp_path).keep(both(3), {"int8": record(3, 77.0)})
    target = tmp_path / "run.mp4"
    assert eval_cmd.main([str(tmp_path), "--episodes", "1", "--video", str(target)]) == 0
    assert target.stat().st_size > 0
