"""The evaluation harness: every metric of a protocol on batches of (reconstruction, ground truth) videos.

:func:`measure` turns one batch into per-clip (and per-frame) values; :func:`summarize` turns all of them into
``{metric: {mean, std, chance, ...}}`` for one protocol, computing the n-way metrics at the end so that their
seeded draws do not depend on batching. :func:`evaluate_videos` runs both over an iterable of batches with a
progress bar. Backbones come from the registry (:func:`pipelines.features.backbones.load_backbone`) in either tier;
``summary["backbones"]`` says which model produced which metric, and where the demo tier stands in for a
published model.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from pipelines.evaluation import metrics
from pipelines.evaluation.protocols import Protocol, frame_indices, resize_videos
from pipelines.features.backbones import Classifier, FlowEstimator, ImageTextEncoder, load_backbone, rescale_flow

EMBEDDING_METRICS = ("clip_pcc", "vifi", "clip_cos", "video_cos")


@dataclass
class EvaluationBackbones:
    """The models a protocol's metrics need; a role the protocol does not use is None."""

    tier: str
    clip: ImageTextEncoder | None = None
    frame_classifier: Classifier | None = None
    video_classifier: Classifier | None = None
    raft: FlowEstimator | None = None
    vifi: ImageTextEncoder | None = None  # the VIFI score's video-CLIP (full: ViFi-CLIP; demo: the demo CLIP)

    def names(self) -> dict[str, str]:
        """Which weights each role has (for ``summary["backbones"]``)."""
        roles = ("clip", "frame_classifier", "video_classifier", "raft", "vifi")
        return {role: getattr(self, role).name for role in roles if getattr(self, role) is not None}


def needed_roles(protocol: Protocol) -> list[str]:
    """Backbone roles the protocol's metrics use."""
    roles = []
    if any(m in protocol.metrics for m in EMBEDDING_METRICS):
        roles.append("clip")
    if "vifi" in protocol.metrics or ("clip_pcc" in protocol.metrics and protocol.clip_pcc == "adjacent"):
        roles.append("vifi")  # the score itself, or the gate of adjacent CLIP-PCC
    levels = {level for _, _, level in protocol.n_way()}
    roles += [f"{level}_classifier" for level in ("frame", "video") if level in levels]
    if "epe" in protocol.metrics and protocol.flow == "raft":
        roles.append("raft")
    return roles


def load_evaluation_backbones(
    protocol: Protocol, tier: str = "demo", backbones_dir: str | Path | None = None, device: str = "cpu"
) -> EvaluationBackbones:
    """Load the backbones ``protocol`` needs from ``tier`` (see ``load_backbone`` for the errors)."""
    roles: dict[str, Any] = {}
    for role in needed_roles(protocol):
        if role == "vifi" and tier == "demo" and "clip" in roles:
            roles[role] = roles["clip"]  # the demo tier's VIFI model is its CLIP: load it once
        else:
            roles[role] = load_backbone(role, tier, backbones_dir, device)
    return EvaluationBackbones(tier=tier, **roles)


def _flows(videos: np.ndarray, protocol: Protocol, backbones: EvaluationBackbones) -> np.ndarray:
    """Flows (n_clips, n_flows, h, w, 2) between frames ``flow_stride`` apart, on the protocol's flow grid."""
    s = protocol.flow_stride
    starts = np.arange(0, videos.shape[1] - s, s)
    if protocol.flow == "farneback":
        chain = np.append(starts, starts[-1] + s)  # frames 0, s, 2s, …: consecutive pairs are the flows' pairs
        flows = np.stack([metrics.farneback_flow(v[chain], protocol.flow_gray) for v in videos])
    else:
        first = videos[:, starts].reshape(-1, *videos.shape[2:])
        second = videos[:, starts + s].reshape(-1, *videos.shape[2:])
        flows = backbones.raft(first, second).reshape(len(videos), len(starts), *videos.shape[2:4], 2)
    if protocol.flow_resolution is None:
        return flows
    grid = protocol.flow_resolution
    flat = torch.from_numpy(np.ascontiguousarray(flows.reshape(-1, *flows.shape[2:]))).permute(0, 3, 1, 2)
    return rescale_flow(flat, grid, grid).permute(0, 2, 3, 1).numpy().reshape(*flows.shape[:2], grid, grid, 2)


def _embed(encoder: ImageTextEncoder, videos: np.ndarray) -> np.ndarray:
    return encoder.encode_image(videos.reshape(-1, *videos.shape[2:])).reshape(*videos.shape[:2], -1)


def measure(
    predicted: np.ndarray, target: np.ndarray, protocol: Protocol, backbones: EvaluationBackbones
) -> dict[str, np.ndarray]:
    """Per-clip values of the protocol's metrics for one batch.

    Parameters
    ----------
    predicted, target : arrays of shape (n_clips, n_frames, height, width, 3), uint8 RGB
        ``n_frames`` must be the protocol's; frames are resized to its resolution here.

    Returns
    -------
    dict
        ``ssim``, ``psnr``, ``hue_pcc``: arrays of shape (n_clips, n_frames); ``clip_pcc``, ``vifi``, ``clip_cos``,
        ``video_cos``, ``epe``: (n_clips,); for the n-way metrics, classifier logits ``frame_logits`` /
        ``frame_logits_target`` (n_clips, n_frames, n_classes) and ``video_logits`` / ``video_logits_target``
        (n_clips, n_classes). Only what the protocol lists (and what it needs: VIFI for gated CLIP-PCC).
    """
    predicted, target = metrics.check_videos(predicted, target)
    if target.shape[1] != protocol.n_frames:
        raise ValueError(
            f"target: protocol {protocol.name!r} compares {protocol.n_frames} frames per clip, got {target.shape[1]}. "
            f"Sample the clips with pipelines.evaluation.protocols.frame_indices."
        )
    missing = [role for role in needed_roles(protocol) if getattr(backbones, role) is None]
    if missing:
        raise ValueError(
            f"backbones: protocol {protocol.name!r} ({', '.join(protocol.metrics)}) needs {missing}, which are not "
            f"loaded. Use load_evaluation_backbones(protocol, ...)."
        )
    predicted = resize_videos(predicted, protocol.resolution)
    target = resize_videos(target, protocol.resolution)
    wanted = set(protocol.metrics)
    out: dict[str, np.ndarray] = {}
    if "ssim" in wanted:
        out["ssim"] = metrics.ssim(predicted, target, protocol.ssim)
    if "psnr" in wanted:
        out["psnr"] = metrics.psnr(predicted, target)
    if "hue_pcc" in wanted:
        out["hue_pcc"] = metrics.hue_similarity(predicted, target, protocol.hue)
    if wanted & set(EMBEDDING_METRICS):
        e_pred, e_target = _embed(backbones.clip, predicted), _embed(backbones.clip, target)
        video_cos = metrics.video_cosine(e_pred, e_target)
        vifi = video_cos  # the demo tier's VIFI: frame-averaged CLIP, the same model
        if backbones.vifi is not None and backbones.vifi.name != backbones.clip.name:  # the full tier's ViFi-CLIP
            vifi = metrics.video_cosine(_embed(backbones.vifi, predicted), _embed(backbones.vifi, target))
        if "vifi" in wanted:
            out["vifi"] = vifi
        if "video_cos" in wanted:
            out["video_cos"] = video_cos
        if "clip_cos" in wanted:
            out["clip_cos"] = metrics.frame_cosine(e_pred, e_target)
        if "clip_pcc" in wanted:
            if protocol.clip_pcc == "adjacent":
                out["clip_pcc"] = metrics.clip_pcc_adjacent(e_pred, vifi, protocol.clip_pcc_gate)
            else:
                out["clip_pcc"] = metrics.clip_pcc_all_pairs(e_pred)
    if "epe" in wanted:
        out["epe"] = metrics.flow_epe(_flows(predicted, protocol, backbones), _flows(target, protocol, backbones))
    levels = {level for _, _, level in protocol.n_way()}
    if "frame" in levels:
        n, t = predicted.shape[:2]
        for key, videos in (("frame_logits", predicted), ("frame_logits_target", target)):
            out[key] = backbones.frame_classifier.logits(videos.reshape(n * t, *videos.shape[2:])).reshape(n, t, -1)
    if "video" in levels:
        out["video_logits"] = backbones.video_classifier.logits(predicted)
        out["video_logits_target"] = backbones.video_classifier.logits(target)
    return out


def _mean_std(values: np.ndarray, protocol: Protocol) -> dict[str, float]:
    values = np.asarray(values, np.float64)
    if values.ndim == 2 and protocol.averaging == "frame_position":
        # MinD-Video / NeuroClips: mean and std over clips at each frame position, then averaged over positions
        return {"mean": float(values.mean(axis=0).mean()), "std": float(values.std(axis=0).mean())}
    per_clip = values.mean(axis=1) if values.ndim == 2 else values
    return {"mean": float(per_clip.mean()), "std": float(per_clip.std())}


def summarize(measurements: dict[str, np.ndarray], protocol: Protocol, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Mean, std (and chance, for n-way) of every metric the protocol lists, from :func:`measure`'s values.

    An n-way metric the classifier cannot support (fewer than n + 2 classes) is reported with ``mean: None`` and the
    reason, not dropped silently.
    """
    out: dict[str, dict[str, Any]] = {}
    for metric in protocol.metrics:
        if metric in measurements:
            out[metric] = {**_mean_std(measurements[metric], protocol), "n_clips": int(len(measurements[metric]))}
    for metric, n_way, level in protocol.n_way():
        logits, target = measurements[f"{level}_logits"], measurements[f"{level}_logits_target"]
        n_classes = logits.shape[-1]
        chance = metrics.n_way_chance(n_way, protocol.top_k)
        if n_classes < n_way + 2:
            out[metric] = {
                "mean": None,
                "std": None,
                "chance": chance,
                "unavailable": f"{n_way}-way needs a classifier with >= {n_way + 2} classes; this one has {n_classes}",
            }
            continue
        if level == "frame":  # per frame position over all clips, as the papers do
            accuracy, binomial = (
                np.stack(a, axis=1)
                for a in zip(
                    *(
                        metrics.n_way_top_k(
                            target[:, j], logits[:, j], n_way, protocol.top_k, protocol.n_way_trials, seed + j
                        )
                        for j in range(logits.shape[1])
                    ),
                    strict=True,
                )
            )
        else:
            accuracy, binomial = metrics.n_way_top_k(target, logits, n_way, protocol.top_k, protocol.n_way_trials, seed)
        out[metric] = {
            **_mean_std(accuracy, protocol),
            "binomial_std": float(binomial.mean()),  # the papers' "±" (reference A.7)
            "chance": chance,
            "n_clips": int(len(accuracy)),
        }
    return out


def evaluate_videos(
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    protocol: Protocol,
    backbones: EvaluationBackbones,
    seed: int = 0,
    total: int | None = None,
    progress: bool = True,
) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]:
    """Measure every batch of (predicted, target) videos and summarise under ``protocol``.

    Returns
    -------
    summary : dict
        :func:`summarize`'s output.
    measurements : dict
        The per-clip values of all batches, concatenated (for significance tests between methods).
    """
    parts: dict[str, list[np.ndarray]] = {}
    with tqdm(total=total, desc=f"evaluate ({protocol.name})", unit="clip", disable=not progress) as bar:
        for predicted, target in batches:
            for key, value in measure(predicted, target, protocol, backbones).items():
                parts.setdefault(key, []).append(value)
            bar.update(len(target))
    if not parts:
        raise ValueError("batches: expected at least one (predicted, target) batch, got none.")
    measurements = {key: np.concatenate(values) for key, values in parts.items()}
    return summarize(measurements, protocol, seed), measurements


def iter_clips(videos: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Consecutive batches of at most ``batch_size`` clips."""
    for start in range(0, len(videos), batch_size):
        yield videos[start : start + batch_size]


def sample_clips(videos: np.ndarray, source_fps: float, protocol: Protocol) -> np.ndarray:
    """The protocol's frames of every clip: (n_clips, n_source_frames, ...) → (n_clips, protocol.n_frames, ...)."""
    return videos[:, frame_indices(protocol, videos.shape[1], source_fps)]
