"""Evaluation protocols as data: each paper's frames, resolution and metric variants (reference section A).

The published numbers are computed under different protocols — colour or grayscale SSIM, adjacent-and-gated or
all-pairs CLIP-PCC, 6 or 8 frames at 256 or 512 pixels — so a number means something only with its protocol. A
protocol is a YAML preset in ``pipelines/configs/protocols/`` loaded into :class:`Protocol`; nothing about a
protocol is written in code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from pipelines.config import CONFIG_DIR, load_config, preset_path

PROTOCOLS = tuple(sorted(p.stem for p in (CONFIG_DIR / "protocols").glob("*.yaml")))
# metrics a protocol may list; n-way metrics are written "{n}way_i" (frame level) or "{n}way_v" (video level)
NAMED_METRICS = ("ssim", "psnr", "hue_pcc", "clip_pcc", "epe", "vifi", "clip_cos", "video_cos")
N_WAY = re.compile(r"(\d+)way_([iv])")


@dataclass(frozen=True)
class Protocol:
    """One paper's evaluation protocol (every field is documented in the presets' comments)."""

    name: str  # e.g. "mind-animator"
    source: str  # the code or document it follows
    n_frames: int  # frames per clip that are compared
    fps: float  # their frame rate: frame j is the one shown at time j / fps
    resolution: int  # ground truth and reconstruction are resized to resolution x resolution (bilinear)
    averaging: Literal["clip", "frame_position"]  # over clips of per-clip means, or per frame position then mean
    metrics: tuple[str, ...]  # what is computed; see NAMED_METRICS and N_WAY
    ssim: Literal["colour", "gray"] = "colour"  # metrics.ssim variant
    hue: Literal["rgb", "bgr_quirk"] = "rgb"  # metrics.hue_similarity variant
    clip_pcc: Literal["adjacent", "all_pairs"] = "adjacent"  # CLIP-PCC definition
    clip_pcc_gate: float | None = None  # adjacent CLIP-PCC is 0 where VIFI <= gate; None: no gating
    flow: Literal["farneback", "raft"] = "farneback"  # optical flow behind EPE
    flow_gray: Literal["rgb", "bgr_quirk"] = "rgb"  # how frames become gray for Farnebäck
    flow_resolution: int | None = None  # flows are compared on this square grid; None: at ``resolution``
    flow_stride: int = 1  # frames between the two frames of a flow
    n_way_trials: int = 100  # trials per sample of the n-way metrics
    top_k: int = 1  # n-way top-K
    full_tier: dict[str, str] = field(default_factory=dict)  # the published models behind each metric

    def __post_init__(self) -> None:
        for metric in self.metrics:
            if metric not in NAMED_METRICS and not N_WAY.fullmatch(metric):
                raise ValueError(
                    f"protocol {self.name!r}: unknown metric {metric!r}; expected one of {list(NAMED_METRICS)} or "
                    f"an n-way metric such as '2way_i' (frame level) or '50way_v' (video level)."
                )
        if self.n_frames < 2 or self.fps <= 0 or self.resolution < 11:
            raise ValueError(
                f"protocol {self.name!r}: expected n_frames >= 2, fps > 0 and resolution >= 11, got "
                f"{self.n_frames}, {self.fps} and {self.resolution}."
            )
        if not 1 <= self.flow_stride < self.n_frames:
            raise ValueError(
                f"protocol {self.name!r}: flow_stride: expected 1 to {self.n_frames - 1}, got {self.flow_stride}."
            )

    def n_way(self) -> list[tuple[str, int, str]]:
        """The n-way metrics: (name, n, level) with level "frame" or "video"."""
        out = []
        for metric in self.metrics:
            match = N_WAY.fullmatch(metric)
            if match:
                out.append((metric, int(match.group(1)), "frame" if match.group(2) == "i" else "video"))
        return out


def load_protocol(source: str | Path, overrides: list[str] | None = None) -> Protocol:
    """Load a protocol: a preset name (one of PROTOCOLS) or a YAML file, then ``KEY=VALUE`` overrides.

    Raises
    ------
    ValueError
        For an unknown preset, key or metric, or a value of the wrong type.
    FileNotFoundError
        For a path that does not exist.
    """
    path = Path(source)
    if path.suffix not in (".yaml", ".yml"):
        path = preset_path("protocols", str(source))
    return load_config(Protocol, path, overrides)


def frame_indices(protocol: Protocol, n_source_frames: int, source_fps: float) -> np.ndarray:
    """Indices of the source frames the protocol compares: the frame shown at time j / fps, j < n_frames.

    Raises
    ------
    ValueError
        If the clip is too short for the protocol.
    """
    times = np.arange(protocol.n_frames) / protocol.fps
    indices = np.floor(times * source_fps + 1e-6).astype(np.int64)
    if indices[-1] >= n_source_frames:
        raise ValueError(
            f"protocol {protocol.name!r} compares {protocol.n_frames} frames at {protocol.fps} fps "
            f"({times[-1]:.2f} s), but the clips have {n_source_frames} frames at {source_fps} fps "
            f"({n_source_frames / source_fps:.2f} s). Give longer clips or override n_frames / fps."
        )
    return indices


def resize_videos(videos: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 videos (n_clips, n_frames, height, width, 3) to (n_clips, n_frames, size, size, 3).

    Bilinear (OpenCV's ``INTER_LINEAR``, which Mind-Animator's code uses to bring ground truth to 512 x 512);
    frames already at the size are returned as they are.
    """
    videos = np.asarray(videos)
    if videos.shape[2:4] == (size, size):
        return videos
    flat = videos.reshape(-1, *videos.shape[2:])
    out = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_LINEAR) for f in flat])
    return out.reshape(*videos.shape[:2], size, size, 3)
