"""``actorq eval --video FILE.mp4``: record the greedy episodes as they run.

Frames come from the env's own renderer: Gymnasium envs made with
``render_mode="rgb_array"`` (what Gymnasium's ``RecordVideo`` records), dm_control
tasks through MuJoCo's renderer (``MUJOCO_GL=egl`` unless set: headless, needs
EGL; ``osmesa`` renders on the CPU). They go to the first video writer installed:
moviepy (``RecordVideo``'s own), else imageio with its ffmpeg plugin. Whatever is
missing is said in one sentence before or at the first frame, not deep inside.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np

from actorq import dmc
from actorq.envs import EnvInfo, make_env

# Frames per second of a video at most: envs that step faster keep every k-th frame.
FPS = 30


class VideoError(Exception):
    """No renderer, no video writer, or a file that cannot be written (one sentence)."""


def writer_name() -> str:
    """The video writer this machine has (moviepy, imageio); VideoError naming the fix."""
    if importlib.util.find_spec("moviepy") is not None:
        return "moviepy"
    if (
        importlib.util.find_spec("imageio") is not None
        and importlib.util.find_spec("imageio_ffmpeg") is not None
    ):
        return "imageio"
    raise VideoError(
        "--video needs a video writer and none is installed: pip install moviepy "
        "(what Gymnasium's RecordVideo uses), or imageio imageio-ffmpeg"
    )


def write_mp4(path: Path, frames: list[np.ndarray], fps: float = FPS) -> None:
    """Write RGB frames [H, W, 3] uint8 to an .mp4 with the installed writer."""
    if writer_name() == "moviepy":
        try:
            from moviepy import ImageSequenceClip
        except ImportError:  # moviepy 1.x
            from moviepy.editor import ImageSequenceClip  # type: ignore[no-redef]
        ImageSequenceClip(list(frames), fps=fps).write_videofile(str(path), logger=None)
        return
    import imageio

    as_written: list[Any] = list(frames)
    imageio.mimwrite(str(path), as_written, fps=fps)


class FrameGrabber(gymnasium.Wrapper[Any, Any, Any, Any]):
    """Passes reset and step through unchanged and keeps a frame after reset and after
    every ``every``-th step."""

    def __init__(
        self,
        env: gymnasium.Env[Any, Any],
        grab: Callable[[], Any],
        frames: list[Any],
        every: int = 1,
    ) -> None:
        super().__init__(env)
        self._grab = grab
        self._frames = frames
        self._every = every
        self._steps = 0

    def _keep(self) -> None:
        try:
            frame = self._grab()
        except Exception as err:  # each renderer fails its own way (GL, pygame, display)
            raise VideoError(f"{render_hint(self.env)} ({type(err).__name__}: {err})") from None
        if frame is None:
            raise VideoError(f"{render_hint(self.env)} (the env rendered no frame)")
        self._frames.append(np.asarray(frame, np.uint8))

    def reset(self, **kwargs: Any) -> Any:
        out = self.env.reset(**kwargs)
        self._steps = 0
        self._keep()
        return out

    def step(self, action: Any) -> Any:
        out = self.env.step(action)
        self._steps += 1
        if self._steps % self._every == 0:
            self._keep()
        return out


def render_hint(env: Any) -> str:
    """One sentence on why an env rendered nothing and what would make it render."""
    if isinstance(env, dmc.DmControlEnv):
        return (
            f"dm_control could not render with MUJOCO_GL={os.environ.get('MUJOCO_GL')}: "
            "install an EGL (GPU) or OSMesa (CPU) driver and set MUJOCO_GL=egl or osmesa"
        )
    return (
        "the env could not render rgb_array frames; classic-control envs need pygame "
        "(pip install 'gymnasium[classic-control]'), MuJoCo envs an OpenGL backend (MUJOCO_GL)"
    )


class Recorder:
    """Creates the evaluation's env with rendering on and writes its frames to one .mp4."""

    def __init__(self, path: Path, env_id: str) -> None:
        if path.suffix.lower() != ".mp4":
            raise VideoError(f"--video {path}: give a file name ending in .mp4")
        if not path.parent.is_dir():
            raise VideoError(f"--video {path}: folder {path.parent} does not exist")
        writer_name()  # before any episode runs
        self.path = path
        self.frames: list[np.ndarray] = []
        self.frames_written = 0
        self.fps = float(FPS)
        if dmc.is_dmc_id(env_id):
            # Before dm_control's first import (actorq.dmc disables rendering otherwise).
            os.environ.setdefault("MUJOCO_GL", "egl")

    def make(self, env_id: str, seed: int) -> tuple[gymnasium.Env[Any, Any], EnvInfo]:
        """``evaluate``'s env factory: the env with rendering on, wrapped to keep frames."""
        if dmc.is_dmc_id(env_id):
            env, info = make_env(env_id, seed)
            grab: Callable[[], Any] = env.render_frame  # type: ignore[attr-defined]
        else:
            env, info = make_env(env_id, seed, render_mode="rgb_array")
            grab = env.render
        # Real time: the env's own step rate, thinned to at most FPS frames a second.
        env_fps = float(env.metadata.get("render_fps") or FPS)
        every = max(1, round(env_fps / FPS))
        self.fps = env_fps / every
        return FrameGrabber(env, grab, self.frames, every), info

    def write(self) -> None:
        """Write the frames kept so far to the .mp4."""
        write_mp4(self.path, self.frames, self.fps)
        self.frames_written = len(self.frames)
