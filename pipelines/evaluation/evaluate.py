"""``python -m pipelines evaluate --bundle DIR --protocol NAME``: a bundle's reconstructions of its test clips under
each paper's protocol, with the ablations of its decoders.

Steps: (1) open the bundle and its test clips (the first ``--limit``); (2) reconstruct them with the full pipeline
and, with ``--ablations``, with each decoder switched off, and with ``--baselines`` with the joint and (``--data``)
ridge baselines (videos are cached under ``--out/videos`` and reused when the bundle, clips and settings are the
same, so an interrupted run resumes; several processes share this step); (3) measure each protocol's metrics
(:mod:`pipelines.evaluation.harness`) on the protocol's frames of every clip; under the first protocol also the
decoders block, the baselines, the shuffle test, the ablations and their paired tests; (4) write ``results.json``,
``results.md`` and ``ablations.png``.

``results.json``::

    {"simulated": true, "bundle": ..., "n_clips": N,
     "settings": {"tier", "reconstruction": {...}, "tuning": how tune-bundle chose them on the validation split | null},
     "protocols": {"<protocol>": {"<metric>": {"mean", "std", "chance" (n-way), ...}}},
     "shuffle_test": {"metric": "epe", "protocol", "observed", "p_mean", "p_std", ...}  (with --shuffle-test),
     "baselines": {"joint" | "ridge": {"<metric>": {...}}} (with --baselines; ridge needs --data),
     "decoders": {"semantic_retrieval_top10", "semantic_retrieval_chance", "flow_epe", "flow_epe_zero",
                  "flow_epe_shuffled", "category_acc", "category_chance", "direction_agreement", "direction_chance",
                  "direction_agreement_p", "direction_acc", "direction_p", "direction_acc_ground_truth", ...}
                 (see decoder_scores),
     "ablations_protocol": "<protocol>",
     "ablations": {"full" | "no_semantic" | "no_structure" | "no_motion" | "no_flow" | "no_dependent_noise":
                   {"<metric>": {"mean", "std", ...}}},
     "ablation_tests": {"no_<name>": {"<metric>": {"mean_difference" (ablated − full), "paired_p", "bootstrap_p",
                                                   "worse"}}}}

Metric names are the reference's (``ssim``, ``psnr``, ``hue_pcc``, ``clip_pcc``, ``epe``, ``vifi``, ``2way_i``,
``50way_i``, ``2way_v``, ``50way_v``; BrainNRDS adds ``clip_cos``, ``video_cos``); ``category_acc`` is the share of
clips whose reconstruction the video classifier puts in the ground truth's class (simulated subjects only, chance
1 / n_classes). On a simulated subject every number is about the simulation, never about human data.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from pipelines.config import config_hash
from pipelines.data.twin.stimuli import N_DIRECTION_BINS
from pipelines.evaluation import metrics
from pipelines.evaluation.baselines import fit_ridge_decoders, ridge_baseline
from pipelines.evaluation.harness import evaluate_videos, iter_clips, load_evaluation_backbones, sample_clips
from pipelines.evaluation.protocols import PROTOCOLS, Protocol, load_protocol, resize_videos
from pipelines.evaluation.significance import agreement_test, compare_methods, shuffle_test
from pipelines.features.backbones import load_backbone
from pipelines.reconstruct import ABLATIONS, BundleClips, VideoReconstructionPipeline, load_bundle_clips
from pipelines.training.decoders.stages import caption_ranks

CONDITIONS = ("full", *(f"no_{name}" for name in ABLATIONS))
BASELINES = ("joint", "ridge")  # reconstructed by another pipeline (joint_baseline, ridge_baseline), not by ablation
LOWER_IS_BETTER = {"epe"}


def write_json(path: Path, payload: Any, indent: int | None = None) -> Path:
    """Write ``payload`` as JSON to a temporary name, then rename it: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(json.dumps(payload, indent=indent))
    partial.replace(path)
    return path


def bundle_hash(directory: Path) -> str:
    """A short hash of a bundle's JSON and safetensors files (names, sizes, first MiB): the caches' key."""
    digest = hashlib.sha256()
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.suffix in {".json", ".safetensors"}:
            digest.update(str(path.relative_to(directory)).encode())
            digest.update(str(path.stat().st_size).encode())
            digest.update(path.read_bytes()[: 1 << 20])
    return digest.hexdigest()[:16]


@dataclass
class Reconstructions:
    """One condition's reconstructions of the clips, with what its decoders produced (for the ``decoders`` block)."""

    frames: np.ndarray  # (n_clips, n_frames, image_size, image_size, 3) uint8
    embedding: np.ndarray | None  # (n_clips, embed_dim): decoded semantic embedding (None when semantics are off)
    flow: np.ndarray | None  # (n_clips, n_flows, 2, grid, grid): decoded flow (None without a flow decoder)


def _process_state():
    """Accelerate's view of the processes (one, unless started by ``accelerate launch --multi_gpu`` or ``torchrun``)."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def shard(n_items: int, rank: int, world: int) -> range:
    """The contiguous share of ``n_items`` that process ``rank`` of ``world`` takes (earlier ranks take one more)."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank, world: expected 0 <= rank < world, got {rank} and {world}.")
    size, extra = divmod(n_items, world)
    start = rank * size + min(rank, extra)
    return range(start, start + size + (rank < extra))


def reconstruct_condition(
    pipeline: VideoReconstructionPipeline,
    fmri: np.ndarray,
    condition: str,
    batch_size: int,
    cache: Path | None = None,
    key: str = "",
    state=None,
) -> Reconstructions:
    """Reconstruct every window with the decoders of ``condition`` off; cached as ``cache/<condition>.npz``.

    With ``state`` (Accelerate's ``PartialState``) of several processes, each reconstructs its share of the batches
    into ``cache/<condition>.part<rank>.npz``; every process then returns the whole set (``cache`` is required).
    """
    if condition not in CONDITIONS + BASELINES:
        raise ValueError(f"condition: expected one of {list(CONDITIONS + BASELINES)}, got {condition!r}.")
    world, rank = (1, 0) if state is None else (state.num_processes, state.process_index)
    if world > 1 and cache is None:
        raise ValueError("cache: expected a folder the processes share (several processes reconstruct), got None.")
    path = None if cache is None else cache / f"{condition}.npz"
    stamp = None if path is None else path.with_suffix(".json")

    def cached() -> bool:
        return (
            path is not None and path.is_file() and stamp.is_file() and json.loads(stamp.read_text()).get("key") == key
        )

    if cached():
        return _load_reconstructions(path)
    ablate = None if condition in ("full", *BASELINES) else condition.removeprefix("no_")
    starts = list(range(0, len(fmri), batch_size))
    parts: dict[str, list[np.ndarray]] = {"frames": [], "embedding": [], "flow": []}
    mine = [starts[i] for i in shard(len(starts), rank, world)]
    desc = f"reconstruct ({condition})" + (f" [process {rank + 1}/{world}]" if world > 1 else "")
    for start in tqdm(mine, desc=desc, unit="batch"):
        out = pipeline(fmri[start : start + batch_size], ablate=ablate)
        for name, value in (("frames", out.frames), ("embedding", out.semantic_embedding), ("flow", out.flow)):
            if value is not None:
                parts[name].append(value)
    arrays = {name: np.concatenate(values) for name, values in parts.items() if values}
    if world > 1:
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(cache / f"{condition}.part{rank}.npz", **arrays)
        state.wait_for_everyone()
        merged: dict[str, list[np.ndarray]] = {}
        for r in range(world):  # in rank order, so the clips keep their order; a process may have had no batch
            with np.load(cache / f"{condition}.part{r}.npz") as piece:
                for name in piece.files:
                    merged.setdefault(name, []).append(piece[name])
        arrays = {name: np.concatenate(values) for name, values in merged.items()}
        state.wait_for_everyone()
        if rank == 0:
            for r in range(world):
                (cache / f"{condition}.part{r}.npz").unlink()
    if path is not None and rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **arrays)
        stamp.write_text(json.dumps({"key": key}))
    return Reconstructions(arrays["frames"], arrays.get("embedding"), arrays.get("flow"))


def _load_reconstructions(path: Path) -> Reconstructions:
    with np.load(path) as saved:
        return Reconstructions(saved["frames"], saved.get("embedding"), saved.get("flow"))


def joint_baseline(pipeline: VideoReconstructionPipeline) -> VideoReconstructionPipeline:
    """The non-decoupled baseline (MinD-Video's design): one network from fMRI to the renderer's conditioning — the
    fMRI encoder when the bundle has one — and the whole schedule from noise, without structure, motion or flow."""
    joint = copy.copy(pipeline)
    conditioning = "fmri-encoder" if "fmri-encoder" in pipeline.decoders else "semantic"
    joint.config = replace(pipeline.config, start="noise", conditioning=conditioning)
    return joint


def cached_measurement(
    cache: Path | None, name: str, key: dict[str, Any], measure: Callable[[], tuple[dict, dict]]
) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]:
    """``measure()`` (a :func:`measure_protocol` call), kept as ``cache/<name>.json`` and reused when ``key`` matches.

    The key names what the numbers depend on (the videos' cache key, the protocol, the backbones' weights), so an
    interrupted evaluation resumes its measurements as it resumes its reconstructions, and a changed setting redoes
    them. The file is written whole (to a temporary name, then renamed), so a crash never leaves half of one.
    """
    digest = config_hash(key)
    path = None if cache is None else cache / f"{name}.json"
    if path is not None and path.is_file():
        try:
            saved = json.loads(path.read_text())
        except json.JSONDecodeError:
            saved = {}
        if saved.get("key") == digest:
            return saved["summary"], {m: np.asarray(v, np.float64) for m, v in saved["per_clip"].items()}
    summary, per_clip = measure()
    if path is not None:
        write_json(path, {"key": digest, "summary": summary, "per_clip": {m: v.tolist() for m, v in per_clip.items()}})
    return summary, per_clip


def measure_protocol(
    predicted: np.ndarray,
    target: np.ndarray,
    fps: float,
    protocol: Protocol,
    backbones,
    category: np.ndarray | None,
    batch_size: int = 25,
) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]:
    """The protocol's summary of (predicted, target) clips, plus ``category_acc`` when categories are known.

    Reconstructions of another size than the ground truth (a renderer smaller than the movie) are first resized to
    the ground truth's size (bilinear), then both to the protocol's resolution.

    Returns
    -------
    summary : dict
        metric → {"mean", "std", "chance" (n-way and category), ...}
    per_clip : dict
        metric → array of shape (n_clips,) for the per-clip metrics (``category_acc``: 1 where the class is right),
        for paired tests between conditions.
    """
    predicted, target = sample_clips(predicted, fps, protocol), sample_clips(target, fps, protocol)
    if predicted.shape[2:4] != target.shape[2:4]:  # the renderer's size differs from the movie's: match the latter
        predicted = resize_videos(predicted, target.shape[2])
    batches = zip(iter_clips(predicted, batch_size), iter_clips(target, batch_size), strict=True)
    summary, measurements = evaluate_videos(batches, protocol, backbones, total=len(target))
    per_clip = {}
    for metric, values in measurements.items():
        values = np.asarray(values)
        if metric in summary and values.dtype.kind == "f" and len(values) == len(target):
            flat = values.reshape(len(values), -1)
            counts = (~np.isnan(flat)).sum(axis=1)  # a clip whose values are all NaN (gated CLIP-PCC) stays NaN
            per_clip[metric] = np.nansum(flat, axis=1) / np.where(counts > 0, counts, np.nan)
    logits = measurements.get("video_logits")
    if category is not None and logits is not None:
        hits = (logits.argmax(axis=-1) == category).astype(np.float64)
        per_clip["category_acc"] = hits
        summary["category_acc"] = {
            "mean": float(hits.mean()),
            "std": float(hits.std()),
            "chance": 1.0 / logits.shape[-1],
            "n_clips": int(len(hits)),
        }
    return summary, per_clip


def ablation_tests(per_clip: dict[str, dict[str, np.ndarray]], seed: int = 0) -> dict[str, dict[str, dict]]:
    """Paired comparison of every ablation with the full pipeline on the same clips, metric by metric.

    ``mean_difference`` is ablated − full; ``paired_p`` the Wilcoxon signed-rank test of the per-clip differences
    (the one to trust), ``bootstrap_p`` Mind-Animator's bootstrap-means test (see ``compare_methods``).
    """
    full = per_clip["full"]
    tests: dict[str, dict[str, dict]] = {}
    for condition, values in per_clip.items():
        if condition == "full":
            continue
        tests[condition] = {}
        for metric in full:
            if metric not in values:
                continue
            both = ~(np.isnan(values[metric]) | np.isnan(full[metric]))  # clips measured in both conditions
            if both.sum() < 2:
                continue
            result = compare_methods(values[metric][both], full[metric][both], seed=seed)
            tests[condition][metric] = {
                "mean_difference": result.mean_difference,
                "paired_p": result.paired_p,
                "bootstrap_p": result.bootstrap_p,
                "worse": (result.mean_difference > 0) if metric in LOWER_IS_BETTER else (result.mean_difference < 0),
            }
    return tests


def decoder_scores(
    reconstructions: Reconstructions,
    clips: BundleClips,
    raft=None,
    category: dict[str, Any] | None = None,
    n_permutations: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """What the decoders of the full pipeline recover on the bundle's test clips (the ``decoders`` block).

    - ``semantic_retrieval_top10``: the decoded embedding's own caption among the clips' distinct captions, by cosine
      to the teacher text embeddings (as ``evaluate-decoders``); chance 10 / candidates.
    - ``flow_epe``: decoded flow against the teacher (RAFT) flow, grid pixels; ``flow_epe_zero``: zero flow;
      ``flow_epe_shuffled``: each clip's decoded flow against another clip's teacher flow.
    - ``category_acc``: the video classifier on the reconstructions (from the protocol summary).
    - ``direction_agreement``: the 8-bin net motion direction of each reconstruction from its RAFT flow against the
      ground truth clip's, measured the same way (camera pans included: what a viewer sees move);
      ``direction_agreement_p``: permutation test of the pairing (``direction_agreement_null_mean`` its null mean;
      the null keeps both direction distributions, so it is above 1/8 when directions are unbalanced).
    - ``direction_acc``: the same reconstruction directions against the simulated label (the foreground object's
      displacement alone); ``direction_p``: permutation test; ``direction_acc_ground_truth``: the ground truth frames
      against the label with this estimator (the ceiling: pans move the whole frame, the label ignores them).

    Parts whose inputs are missing (no flow decoder, an older bundle without teacher features, real data without
    labels) are left out.
    """
    out: dict[str, Any] = {}
    n = len(clips)
    if reconstructions.embedding is not None and clips.text is not None:
        ranks, n_candidates = caption_ranks(reconstructions.embedding, np.asarray(clips.captions), clips.text)
        out["semantic_retrieval_top10"] = float((ranks < 10).mean())
        out["semantic_retrieval_chance"] = min(10, n_candidates) / n_candidates
        out["semantic_retrieval_candidates"] = int(n_candidates)
    if reconstructions.flow is not None and clips.flows is not None:
        target = clips.flows
        shift = np.roll(np.arange(n), 1 + int(np.random.default_rng(seed).integers(n - 1)))  # no clip keeps its own
        out["flow_epe"] = metrics.end_point_error(reconstructions.flow, target, axis=-3)
        out["flow_epe_zero"] = metrics.end_point_error(np.zeros_like(target), target, axis=-3)
        out["flow_epe_shuffled"] = metrics.end_point_error(reconstructions.flow[shift], target, axis=-3)
    if category is not None:
        out["category_acc"], out["category_chance"] = category["mean"], category["chance"]
    if raft is not None and n >= 2:
        predicted, seen = _direction_bins(reconstructions.frames, raft), _direction_bins(clips.frames, raft)
        test = agreement_test(predicted, seen, n_permutations, seed)
        out["direction_agreement"] = test.accuracy
        out["direction_chance"] = 1.0 / N_DIRECTION_BINS
        out["direction_agreement_null_mean"] = test.null_mean
        out["direction_agreement_p"] = test.p
        if clips.direction is not None:
            truth = np.asarray(clips.direction)
            test = agreement_test(predicted, truth, n_permutations, seed)
            out["direction_acc"] = test.accuracy
            out["direction_null_mean"] = test.null_mean
            out["direction_p"] = test.p
            out["direction_acc_ground_truth"] = float((seen == truth).mean())
    return out


def _direction_bins(videos: np.ndarray, raft) -> np.ndarray:
    """8-bin net motion direction of every clip from RAFT flow between consecutive frames."""
    n, t = videos.shape[:2]
    flows = raft(videos[:, :-1].reshape(-1, *videos.shape[2:]), videos[:, 1:].reshape(-1, *videos.shape[2:]))
    return metrics.flow_direction(flows.reshape(n, t - 1, *flows.shape[1:]), N_DIRECTION_BINS)[1]


ABLATION_PROTOCOL = "mind-animator"  # first under --protocol all: the ablations and shuffle test are Mind-Animator's


def all_protocols() -> list[str]:
    """Every protocol, Mind-Animator's first (the ablations, baselines and decoders block use the first)."""
    return [ABLATION_PROTOCOL, *(name for name in PROTOCOLS if name != ABLATION_PROTOCOL)]


def _consecutive_farneback(protocol: Protocol) -> bool:
    return "epe" in protocol.metrics and protocol.flow == "farneback" and protocol.flow_stride == 1


def frame_order_shuffle_test(
    predicted: np.ndarray,
    target: np.ndarray,
    fps: float,
    protocol: Protocol,
    n_permutations: int = 100,
    n_repeats: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Mind-Animator's shuffle test of EPE (reference A.9): are the reconstruction's frames in the right order?

    Each permutation reorders the frames of every reconstruction (one permutation for all clips), and EPE against
    the ground truth's Farnebäck flow is measured again; p is the share of permutations with a lower mean EPE than
    the frames in order. The Farnebäck flow of every ordered pair of reconstructed frames is computed once, so each
    permutation costs a lookup, not a flow computation.

    Raises
    ------
    ValueError
        If the protocol's EPE is not Farnebäck between consecutive frames.
    """
    if not _consecutive_farneback(protocol):
        raise ValueError(
            f"shuffle test: expected a protocol with Farnebäck EPE between consecutive frames (mind-animator), got "
            f"{protocol.name!r} (flow {protocol.flow!r}, stride {protocol.flow_stride})."
        )
    predicted = resize_videos(sample_clips(predicted, fps, protocol), protocol.resolution)
    target = resize_videos(sample_clips(target, fps, protocol), protocol.resolution)
    t = protocol.n_frames
    pairs = [(a, b) for a in range(t) for b in range(t) if a != b]
    # cost[i, a, b, k]: EPE of clip i's frames (a → b) against its ground-truth flow k → k + 1
    cost = np.zeros((len(target), t, t, t - 1))
    for i in tqdm(range(len(target)), desc="shuffle test (pair flows)", unit="clip"):
        truth = metrics.farneback_flow(target[i], protocol.flow_gray)
        for a, b in pairs:
            flow = metrics.farneback_flow(predicted[i][[a, b]], protocol.flow_gray)[0]
            cost[i, a, b] = np.linalg.norm(flow[None].astype(np.float64) - truth, axis=-1).mean(axis=(1, 2))
    steps = np.arange(t - 1)

    def score(order: np.ndarray) -> float:
        return float(cost[:, order[:-1], order[1:], steps].mean())

    result = shuffle_test(score, t, n_permutations, n_repeats, higher_is_better=False, seed=seed)
    return {"metric": "epe", "protocol": protocol.name, "observed": result.observed, "p_mean": result.p_mean,
            "p_std": result.p_std, "n_permutations": n_permutations, "n_repeats": n_repeats}  # fmt: skip


def markdown(results: dict) -> str:
    """``results.md``: one table per protocol, and the ablation table."""
    lines = [f"# Evaluation of {results['bundle']} ({results['n_clips']} test clips)", ""]
    if results["simulated"]:
        lines += ["**Simulated subject**: these numbers describe the simulation, not human data.", ""]

    def cell(entry: dict) -> str:
        if entry.get("mean") is None:
            return "n/a"
        text = f"{entry['mean']:.3f} ± {entry['std']:.3f}"
        return text + (f" (chance {entry['chance']:.3f})" if entry.get("chance") is not None else "")

    for name, summary in results["protocols"].items():
        lines += [f"## Protocol `{name}`", "", "| metric | full pipeline |", "|---|---|"]
        lines += [f"| {metric} | {cell(entry)} |" for metric, entry in summary.items()]
        lines.append("")
    if results.get("baselines"):
        lines += [f"## Baselines (protocol `{results['baselines_protocol']}`)", ""]
        for name, summary in results["baselines"].items():
            if "unavailable" in summary:
                lines.append(f"- `{name}`: not measured ({summary['unavailable']})")
                continue
            lines.append(f"- `{name}`: " + ", ".join(f"{m} {cell(e)}" for m, e in summary.items()))
        lines.append("")
    if results.get("shuffle_test"):
        st = results["shuffle_test"]
        lines += [f"Shuffle test ({st['metric']}, protocol `{st['protocol']}`, {st['n_permutations']} permutations × "
                  f"{st['n_repeats']}): p = {st['p_mean']:.3f} ± {st['p_std']:.3f}", ""]  # fmt: skip
    if results.get("ablations"):
        names = list(next(iter(results["ablations"].values())))
        lines += [f"## Ablations (protocol `{results['ablations_protocol']}`)", ""]
        lines += ["| condition | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for condition, summary in results["ablations"].items():
            values = [f"{summary[m]['mean']:.3f}" if summary[m].get("mean") is not None else "n/a" for m in names]
            lines.append(f"| {condition} | " + " | ".join(values) + " |")
        lines.append("")
    if results.get("ablation_tests"):
        tests = results["ablation_tests"]
        names = [m for m in ("ssim", "epe", "category_acc", "clip_pcc", "vifi") if m in next(iter(tests.values()))]
        lines += ["Ablated − full, per-clip Wilcoxon signed-rank p (* where the ablation is worse with p < 0.05):", ""]
        lines += ["| condition | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for condition, per_metric in tests.items():
            cells = []
            for m in names:
                t = per_metric[m]
                star = "*" if t["worse"] and t["paired_p"] < 0.05 else ""
                cells.append(f"{t['mean_difference']:+.3f} (p {t['paired_p']:.3g}){star}")
            lines.append(f"| {condition} | " + " | ".join(cells) + " |")
        lines.append("")
    if results.get("decoders"):
        lines += ["## Decoders of the full pipeline", "", "| measure | value |", "|---|---|"]
        lines += [
            f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in results["decoders"].items()
        ]
        lines.append("")
    return "\n".join(lines)


def plot_ablations(results: dict, path: Path) -> Path:
    """Bar chart of every ablation's change against the full pipeline, one panel per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ablations = results["ablations"]
    shown = [m for m in ablations["full"] if ablations["full"][m].get("mean") is not None]
    fig, axes = plt.subplots(1, len(shown), figsize=(2.6 * len(shown), 3.2), squeeze=False)
    names = list(ablations)
    for ax, metric in zip(axes[0], shown, strict=True):
        means = [ablations[c][metric]["mean"] for c in names]
        ax.bar(range(len(names)), means, color=["0.3"] + ["tab:red"] * (len(names) - 1))
        ax.set_xticks(range(len(names)), [n.removeprefix("no_") for n in names], rotation=60, fontsize=7)
        ax.set_title(metric + (" (lower is better)" if metric in LOWER_IS_BETTER else ""), fontsize=8)
    title = f"Ablations, protocol {results['ablations_protocol']}, {results['n_clips']} clips"
    fig.suptitle(title + (" — simulated subject" if results["simulated"] else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _first(clips: BundleClips, n: int) -> BundleClips:
    """The first ``n`` clips."""
    cut = {k: (v[:n] if v is not None else None) for k, v in vars(clips).items()}
    return BundleClips(**cut)


def _flow_image_size(pipeline: VideoReconstructionPipeline) -> int:
    flow = pipeline.decoders.get("flow")
    return int(flow.config.image_size) if flow is not None else pipeline.info.image_size


def evaluate_bundle(
    bundle: str | Path,
    protocols: list[str],
    backbones_dir: str | Path | None,
    out: str | Path,
    limit: int | None = None,
    ablations: bool = False,
    tier: str = "demo",
    batch_size: int = 8,
    overrides: dict[str, Any] | None = None,
    shuffle: bool = False,
    baselines: bool = False,
    data=None,
    device: str | None = None,
) -> dict:
    """Run the evaluation and write ``results.json``, ``results.md`` (and ``ablations.png``); return the results.

    Started as several processes (``accelerate launch --multi_gpu`` on GPUs, ``torchrun`` on CPUs), every process
    reconstructs its share of the clips (``device`` default: its own GPU, or the CPU); the main process measures
    and writes, and the others return ``{}``.

    Raises
    ------
    FileNotFoundError
        If the bundle or its test clips are missing.
    ValueError
        For an unknown protocol, a limit below 2, or ``data`` (the ridge baseline's training data, a
        :class:`DecoderData`) of another subject than the bundle's.
    """
    bundle, out = Path(bundle), Path(out)
    state = _process_state()
    if device is None:  # this process's GPU, or the CPU (safetensors refuses "cpu:0")
        device = "cpu" if state.device.type == "cpu" else str(state.device)
    pipeline = VideoReconstructionPipeline.from_pretrained(bundle, device=device, **(overrides or {}))
    if data is not None and pipeline.info.data_key and data.dataset.key != pipeline.info.data_key:
        raise ValueError(
            f"--data: expected the prepared data the bundle was trained on (key {pipeline.info.data_key}), got key "
            f"{data.dataset.key}; pass the bundle's subject and --config."
        )
    clips = load_bundle_clips(bundle)
    n = len(clips) if limit is None else min(limit, len(clips))
    if n < 2:
        raise ValueError(
            f"--limit: expected at least 2 test clips (the n-way and shuffle metrics compare clips), got {n}."
        )
    loaded = [load_protocol(name) for name in protocols]
    backbones = {p.name: load_evaluation_backbones(p, tier, backbones_dir) for p in loaded}
    bundle_key = bundle_hash(bundle)
    key = config_hash({"bundle": bundle_key, "n": n, "config": asdict(pipeline.config)})
    clips = _first(clips, n)
    fmri, target, category = clips.fmri, clips.frames, clips.category
    conditions = CONDITIONS if ablations else ("full",)
    others = {}
    if baselines:
        others["joint"] = joint_baseline(pipeline)
        if data is not None:
            others["ridge"] = ridge_baseline(pipeline, fit_ridge_decoders(data, _flow_image_size(pipeline)))
    # 1. Reconstruct (each process its share of the batches when several run); the rest runs on the main process.
    videos = {c: reconstruct_condition(pipeline, fmri, c, batch_size, out / "videos", key, state) for c in conditions}
    video_keys = dict.fromkeys(conditions, key)
    for name, other in others.items():
        video_keys[name] = config_hash({"bundle": bundle_key, "n": n, "config": asdict(other.config), "baseline": name})
        videos[name] = reconstruct_condition(other, fmri, name, batch_size, out / "videos", video_keys[name], state)
    if not state.is_main_process:
        return {}
    # 2. Measure every protocol on the full pipeline; the decoders block, baselines, shuffle test and ablations under
    # the first protocol.
    results: dict[str, Any] = {
        "simulated": bool(pipeline.info.simulated),
        "bundle": str(bundle),
        "n_clips": n,
        "settings": {"tier": tier, "reconstruction": asdict(pipeline.config), "tuning": pipeline.tuning},
        "protocols": {},
        "backbones": {name: models.names() for name, models in backbones.items()},
    }
    fps = pipeline.info.fps

    def measured(condition: str, protocol: Protocol) -> tuple[dict, dict]:  # cached in OUT/metrics/ (resumes)
        models = backbones[protocol.name]
        key = {"videos": video_keys[condition], "condition": condition, "protocol": asdict(protocol),
               "backbones": models.names(), "category": category is not None, "fps": fps}  # fmt: skip
        return cached_measurement(
            out / "metrics", f"{protocol.name}.{condition}", key,
            lambda: measure_protocol(videos[condition].frames, target, fps, protocol, models, category),
        )  # fmt: skip

    per_clip = {}
    for protocol in loaded:
        results["protocols"][protocol.name], per_clip[protocol.name] = measured("full", protocol)
    first = loaded[0]
    # RAFT for the direction measures: a protocol's when one has it (real data too), else loaded on a simulated subject
    raft = next((backbones[p.name].raft for p in loaded if backbones[p.name].raft is not None), None)
    if raft is None and clips.direction is not None:
        raft = load_backbone("raft", tier, backbones_dir)
    results["decoders"] = decoder_scores(
        videos["full"], clips, raft, results["protocols"][first.name].get("category_acc")
    )
    if baselines:
        results["baselines"], results["baselines_protocol"] = {}, first.name
        for name in others:
            results["baselines"][name], _ = measured(name, first)
        if data is None:
            results["baselines"]["ridge"] = {
                "unavailable": "the ridge baseline is fitted on the training split: pass --data"
            }
    if shuffle:  # Mind-Animator's test: under the first protocol with consecutive Farnebäck EPE, else its own
        tested = next((p for p in loaded if _consecutive_farneback(p)), None) or load_protocol(ABLATION_PROTOCOL)
        results["shuffle_test"] = frame_order_shuffle_test(videos["full"].frames, target, fps, tested)
    if ablations:
        results["ablations_protocol"] = first.name
        results["ablations"] = {"full": results["protocols"][first.name]}
        ablated = {"full": per_clip[first.name]}
        for condition in conditions[1:]:
            results["ablations"][condition], ablated[condition] = measured(condition, first)
        results["ablation_tests"] = ablation_tests(ablated)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(markdown(results))
    if ablations:
        plot_ablations(results, out / "ablations.png")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, help="a bundle folder (build-bundle --out, or assets/demo)")
    parser.add_argument("--protocol", nargs="+", default=["mind-animator"],
                        help=f"one or more of {list(PROTOCOLS)}, or 'all'; the first is used for the ablations")  # fmt: skip
    parser.add_argument("--backbones", help="the demo tier's folder (the evaluation classifiers, CLIP and RAFT)")
    parser.add_argument("--tier", default="demo", choices=("demo", "full"))
    parser.add_argument("--limit", type=int, help="evaluate the first N test clips (default: all)")
    parser.add_argument("--ablations", action="store_true", help="also reconstruct with each decoder switched off")
    parser.add_argument("--shuffle-test", action="store_true", help="Mind-Animator's frame-order test of EPE")
    parser.add_argument("--baselines", action="store_true",
                        help="also the joint (non-decoupled) baseline and, with --data, the ridge baseline")  # fmt: skip
    parser.add_argument(
        "--data", help="the bundle's subject (CC2017 layout): the ridge baseline is fitted on its training split"
    )
    parser.add_argument(
        "--config", default="demo", help="the decoders' config the bundle was trained with (for --data)"
    )
    parser.add_argument("--cache-dir", help="prepared data and teacher features (default $MINDREEL_CACHE; for --data)")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per pipeline call")
    parser.add_argument("--device", help="where the pipeline runs (default: this process's GPU under accelerate "
                        "launch, else the GPU if there is one, else cpu)")  # fmt: skip
    parser.add_argument("--out", default="runs/evaluation", help="results.json, results.md, ablations.png, videos/")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a ReconstructionConfig field, e.g. --set guidance_scale=5")  # fmt: skip
    args = parser.parse_args(argv)
    names = all_protocols() if args.protocol == ["all"] else args.protocol
    if args.tier == "demo" and not args.backbones:
        parser.error("--backbones is required with --tier demo (the folder train-backbones wrote)")
    try:
        overrides = {}
        for item in args.set:
            field, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--set: expected FIELD=VALUE, got {item!r}.")
            try:
                overrides[field] = json.loads(value)
            except json.JSONDecodeError:
                overrides[field] = value  # a bare string, e.g. --set start=invert
        data = None
        if args.baselines and args.data:
            from pipelines.training.decoders.config import load_decoders_config
            from pipelines.training.decoders.train import load_data

            data = load_data(
                load_decoders_config(args.config, []), args.data, args.backbones, args.tier, args.cache_dir
            )
        results = evaluate_bundle(
            args.bundle, names, args.backbones, args.out, args.limit, args.ablations, args.tier, args.batch_size,
            overrides, args.shuffle_test, args.baselines, data, args.device,
        )  # fmt: skip
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if results:  # the main process (the others only reconstruct their share)
        print(markdown(results))
        print(f"written to {args.out}/results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
