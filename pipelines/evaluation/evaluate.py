"""``python -m pipelines evaluate --bundle DIR --protocol NAME``: a bundle's reconstructions of its test clips under
each paper's protocol, with the ablations of its decoders.

Steps: (1) open the bundle and its test clips (the first ``--limit``); (2) reconstruct them with the full pipeline
and, with ``--ablations``, with each decoder switched off (videos are cached under ``--out/videos`` and reused when
the bundle, clips and settings are the same, so an interrupted run resumes); (3) measure each protocol's metrics
(:mod:`pipelines.evaluation.harness`) on the protocol's frames of every clip; the ablations under the first protocol;
(4) write ``results.json``, ``results.md`` and ``ablations.png``.

``results.json``::

    {"simulated": true, "bundle": ..., "n_clips": N, "settings": {...},
     "protocols": {"<protocol>": {"<metric>": {"mean", "std", "chance" (n-way), ...}}},
     "shuffle_test": {"metric": "epe", "protocol", "observed", "p_mean", "p_std", ...}  (with --shuffle-test),
     "baselines": {"joint": {"<metric>": {...}}} (with --baselines; ridge baselines are not built yet),
     "ablations_protocol": "<protocol>",
     "ablations": {"full" | "no_semantic" | "no_structure" | "no_motion" | "no_flow" | "no_dependent_noise":
                   {"<metric>": {"mean", "std", ...}}}}

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
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from pipelines.config import config_hash
from pipelines.evaluation import metrics
from pipelines.evaluation.harness import evaluate_videos, iter_clips, load_evaluation_backbones, sample_clips
from pipelines.evaluation.protocols import PROTOCOLS, Protocol, load_protocol, resize_videos
from pipelines.evaluation.significance import shuffle_test
from pipelines.reconstruct import ABLATIONS, VideoReconstructionPipeline, load_bundle_clips

CONDITIONS = ("full", *(f"no_{name}" for name in ABLATIONS))
BASELINES = ("joint",)  # reconstructed by a pipeline of other settings (joint_baseline), not by ablation
LOWER_IS_BETTER = {"epe"}


def _bundle_hash(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.suffix in {".json", ".safetensors"}:
            digest.update(str(path.relative_to(directory)).encode())
            digest.update(str(path.stat().st_size).encode())
            digest.update(path.read_bytes()[: 1 << 20])
    return digest.hexdigest()[:16]


def reconstruct_condition(
    pipeline: VideoReconstructionPipeline,
    fmri: np.ndarray,
    condition: str,
    batch_size: int,
    cache: Path | None = None,
    key: str = "",
) -> np.ndarray:
    """Reconstruct every window with the decoders of ``condition`` off; cached as ``cache/<condition>.npy``.

    Returns
    -------
    array of shape (n_clips, n_frames, image_size, image_size, 3), uint8
    """
    if condition not in CONDITIONS + BASELINES:
        raise ValueError(f"condition: expected one of {list(CONDITIONS + BASELINES)}, got {condition!r}.")
    path = None if cache is None else cache / f"{condition}.npy"
    stamp = None if path is None else path.with_suffix(".json")
    if path is not None and path.is_file() and stamp.is_file() and json.loads(stamp.read_text()).get("key") == key:
        return np.load(path)
    ablate = None if condition in ("full", *BASELINES) else condition.removeprefix("no_")
    parts = []
    for start in tqdm(range(0, len(fmri), batch_size), desc=f"reconstruct ({condition})", unit="batch"):
        parts.append(pipeline(fmri[start : start + batch_size], ablate=ablate).frames)
    videos = np.concatenate(parts)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, videos)
        stamp.write_text(json.dumps({"key": key}))
    return videos


def joint_baseline(pipeline: VideoReconstructionPipeline) -> VideoReconstructionPipeline:
    """The non-decoupled baseline (MinD-Video's design): one network from fMRI to the renderer's conditioning — the
    fMRI encoder when the bundle has one — and the whole schedule from noise, without structure, motion or flow."""
    joint = copy.copy(pipeline)
    conditioning = "fmri-encoder" if "fmri-encoder" in pipeline.decoders else "semantic"
    joint.config = replace(pipeline.config, start="noise", conditioning=conditioning)
    return joint


def measure_protocol(
    predicted: np.ndarray,
    target: np.ndarray,
    fps: float,
    protocol: Protocol,
    backbones,
    category: np.ndarray | None,
    batch_size: int = 25,
) -> dict[str, dict[str, Any]]:
    """The protocol's summary of (predicted, target) clips, plus ``category_acc`` when categories are known."""
    predicted, target = sample_clips(predicted, fps, protocol), sample_clips(target, fps, protocol)
    batches = zip(iter_clips(predicted, batch_size), iter_clips(target, batch_size), strict=True)
    summary, measurements = evaluate_videos(batches, protocol, backbones, total=len(target))
    logits = measurements.get("video_logits")
    if category is not None and logits is not None:
        hits = (logits.argmax(axis=-1) == category).astype(np.float64)
        summary["category_acc"] = {
            "mean": float(hits.mean()),
            "std": float(hits.std()),
            "chance": 1.0 / logits.shape[-1],
            "n_clips": int(len(hits)),
        }
    return summary


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
    if "epe" not in protocol.metrics or protocol.flow != "farneback" or protocol.flow_stride != 1:
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
) -> dict:
    """Run the evaluation and write ``results.json``, ``results.md`` (and ``ablations.png``); return the results.

    Raises
    ------
    FileNotFoundError
        If the bundle or its test clips are missing.
    ValueError
        For an unknown protocol or a limit below 2.
    """
    bundle, out = Path(bundle), Path(out)
    pipeline = VideoReconstructionPipeline.from_pretrained(bundle, **(overrides or {}))
    clips = load_bundle_clips(bundle)
    n = len(clips) if limit is None else min(limit, len(clips))
    if n < 2:
        raise ValueError(
            f"--limit: expected at least 2 test clips (the n-way and shuffle metrics compare clips), got {n}."
        )
    loaded = [load_protocol(name) for name in protocols]
    backbones = {p.name: load_evaluation_backbones(p, tier, backbones_dir) for p in loaded}
    bundle_hash = _bundle_hash(bundle)
    key = config_hash({"bundle": bundle_hash, "n": n, "config": asdict(pipeline.config)})
    fmri, target, category = clips.fmri[:n], clips.frames[:n], None if clips.category is None else clips.category[:n]
    conditions = CONDITIONS if ablations else ("full",)
    videos = {c: reconstruct_condition(pipeline, fmri, c, batch_size, out / "videos", key) for c in conditions}
    results: dict[str, Any] = {
        "simulated": bool(pipeline.info.simulated),
        "bundle": str(bundle),
        "n_clips": n,
        "settings": {"tier": tier, "reconstruction": asdict(pipeline.config)},
        "protocols": {},
        "backbones": {name: models.names() for name, models in backbones.items()},
    }
    fps = pipeline.info.fps
    for protocol in loaded:
        results["protocols"][protocol.name] = measure_protocol(
            videos["full"], target, fps, protocol, backbones[protocol.name], category
        )
    first = loaded[0]  # the baselines, shuffle test and ablations are measured under the first protocol
    if baselines:
        joint = joint_baseline(pipeline)
        joint_key = config_hash({"bundle": bundle_hash, "n": n, "config": asdict(joint.config)})
        video = reconstruct_condition(joint, fmri, "joint", batch_size, out / "videos", joint_key)
        results["baselines"] = {"joint": measure_protocol(video, target, fps, first, backbones[first.name], category)}
        results["baselines_protocol"] = first.name
    if shuffle:
        results["shuffle_test"] = frame_order_shuffle_test(videos["full"], target, fps, first)
    if ablations:
        results["ablations_protocol"] = first.name
        results["ablations"] = {"full": results["protocols"][first.name]}
        for condition in conditions[1:]:
            results["ablations"][condition] = measure_protocol(
                videos[condition], target, fps, first, backbones[first.name], category
            )
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
    parser.add_argument("--baselines", action="store_true", help="also the joint (non-decoupled) baseline")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per pipeline call")
    parser.add_argument("--out", default="runs/evaluation", help="results.json, results.md, ablations.png, videos/")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a ReconstructionConfig field, e.g. --set guidance_scale=5")  # fmt: skip
    args = parser.parse_args(argv)
    names = list(PROTOCOLS) if args.protocol == ["all"] else args.protocol
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
        results = evaluate_bundle(
            args.bundle, names, args.backbones, args.out, args.limit, args.ablations, args.tier, args.batch_size,
            overrides, args.shuffle_test, args.baselines,
        )  # fmt: skip
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(markdown(results))
    print(f"written to {args.out}/results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
