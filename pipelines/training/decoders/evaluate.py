"""``python -m pipelines evaluate-decoders``: score each trained stage-1 decoder on the test split, beside its ridge
baseline and its controls.

| stage | metric (test split) | controls |
|---|---|---|
| semantic, fmri-encoder | caption retrieval top-10 / top-1 among the split's distinct captions | ridge, chance, shuffled fMRI |
| structure | first-frame latent MSE | ridge, mean training latent, shuffled fMRI |
| motion | latent MSE of frames 1… generated from the true first latent; shuffle test | ridge, repeated first frame, shuffled fMRI |
| flow | end-point error against the teacher (RAFT) flow, grid pixels | ridge, zero flow, shuffled fMRI |

"Shuffled fMRI" gives each test clip the fMRI of another test clip (one fixed permutation), keeping everything
else. The motion shuffle test (reference A.9) permutes the order of the generated latents; its metric is the
*latent motion cosine*: the cosine between predicted and true frame-to-frame latent differences, averaged over
steps and clips, which rewards motion in the right direction and not mere closeness to the first frame. (The
reference scores pixel flow EPE on decoded videos; that belongs to the end-to-end evaluation.)

The motion stage is scored on two paths:

- **first frame given** (the keys at the top of ``results["motion"]``): generation starts from the clip's true first
  latent. This isolates the generator's latent MSE, but the true first frame is stimulus information: on the
  simulated subject it alone predicts much of the motion (the object's category sets its kind of motion), so here
  the generator given shuffled fMRI still passes the shuffle test and cannot serve as the "without fMRI" control.
- **inference path** (``results["motion"]["pipeline"]``, the issue's acceptance): generation starts from the
  first latent the pipeline decodes from the clip's fMRI (the structure decoder saved beside it, else the structure
  ridge), as at inference. Its controls remove the clip's fMRI: ``shuffled_fmri`` runs the whole path (first frame
  and generator) on another clip's fMRI; ``generator_shuffled_fmri`` keeps the decoded first frame and gives only
  the generator another clip's fMRI. The shuffle test of one such control is not a reliable verdict: its p swings
  between 0 and 1 with the clip permutation (a clip's steps are coherent, so an unrelated pairing's score in the
  true frame order varies more than over frame permutations). So each control is run over ``N_FMRI_SHUFFLES`` clip
  permutations, and ``fmri_permutation_p`` = (1 + #controls whose motion cosine reaches the decoder's) / (1 + n).
  ``target_met``: the decoder's shuffle-test p < 0.05 and, for both controls, ``fmri_permutation_p`` < 0.05 (the
  advantage is gone without the clip's fMRI).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.evaluation.metrics import end_point_error
from pipelines.evaluation.significance import compare_methods, shuffle_test
from pipelines.features.backbones import to_tensor
from pipelines.models.registry import DECODERS
from pipelines.training.decoders.config import STAGES, DecodersConfig, load_decoders_config
from pipelines.training.decoders.data import DecoderData
from pipelines.training.decoders.ridge import fit_ridge
from pipelines.training.decoders.stages import caption_ranks, make_stage

TOP_K = 10
# issue targets: semantic top-10 >= 3x chance; shuffle test p < 0.05; flow EPE < zero and shuffled-fMRI EPE
RETRIEVAL_FACTOR = 3.0
SHUFFLE_P = 0.05
# the inference path's "without fMRI" controls: this many clip permutations of the fMRI (smallest p 1 / (n + 1))
N_FMRI_SHUFFLES = 24


def motion_cosine(predicted: np.ndarray, target: np.ndarray, order: np.ndarray | None = None) -> float:
    """Mean cosine between predicted and true frame-to-frame differences.

    Parameters
    ----------
    predicted, target : arrays of shape (n_clips, n_frames, ...)
    order : int array of shape (n_frames,), optional
        Take the predicted frames in this order (the shuffle test's permutation).
    """
    if predicted.shape != target.shape or predicted.ndim < 3:
        raise ValueError(
            f"motion_cosine: expected two arrays of one shape (n_clips, n_frames, ...), got {predicted.shape} and "
            f"{target.shape}."
        )
    p = predicted if order is None else predicted[:, order]
    dp = np.diff(p.reshape(*p.shape[:2], -1), axis=1)
    dt = np.diff(target.reshape(*target.shape[:2], -1), axis=1)
    cos = (dp * dt).sum(-1) / (np.linalg.norm(dp, axis=-1) * np.linalg.norm(dt, axis=-1)).clip(min=1e-8)
    return float(cos.mean())


def _retrieval(embeddings: np.ndarray, data: DecoderData) -> dict[str, float]:
    test = data.splits["test"]
    ranks, n = caption_ranks(embeddings, test.captions, test.text)
    return {
        "top10": float((ranks < TOP_K).mean()),
        "top1": float((ranks < 1).mean()),
        "chance_top10": min(TOP_K, n) / n,
        "chance_top1": 1 / n,
        "n_candidates": n,
    }


def per_clip(errors: np.ndarray) -> np.ndarray:
    """Mean of an error array over everything but its first axis (clips): array of shape (n_clips,)."""
    return np.asarray(errors, np.float64).reshape(len(errors), -1).mean(axis=1)


def ridge_paired_p(decoder: np.ndarray, ridge: np.ndarray) -> float:
    """Wilcoxon signed-rank p of the per-clip differences between the decoder's and ridge's scores (two-sided)."""
    return compare_methods(decoder, ridge, n_bootstrap=1).paired_p


def flatten(*arrays: np.ndarray) -> np.ndarray:
    """Arrays with one row per clip → one float64 matrix (n, features): each flattened, side by side."""
    return np.concatenate([np.asarray(a, np.float64).reshape(len(a), -1) for a in arrays], axis=1)


def _fit(data: DecoderData, inputs, target):
    """Fit on train (penalty on val) a ridge from ``inputs(split)`` to ``target(split)``."""
    return fit_ridge(
        flatten(*inputs("train")), flatten(target("train")), flatten(*inputs("val")), flatten(target("val"))
    )


def _ridge(data: DecoderData, inputs, target) -> np.ndarray:
    """:func:`_fit`, then predict the test split."""
    return _fit(data, inputs, target).predict(flatten(*inputs("test")))


def _structure_ridge(data: DecoderData) -> np.ndarray:
    """The structure ridge's first-frame latents of the test clips, shaped as the latents."""
    first = _ridge(data, lambda s: (data.volume(s),), lambda s: data.splits[s].latents[:, 0])
    return first.reshape(data.splits["test"].latents[:, 0].shape)


def _shuffle_test(video: np.ndarray, latents: np.ndarray, seed: int) -> dict:
    """The shuffle test of ``video``'s frame order against ``latents`` (motion cosine), as a JSON object."""
    result = shuffle_test(lambda order: motion_cosine(video, latents, order), latents.shape[1], seed=seed)
    return {
        "metric": "latent_motion_cosine",
        "observed": result.observed,
        "p_mean": result.p_mean,
        "p_std": result.p_std,
    }


def pipeline_first_latents(
    decoders_dir: Path, config: DecodersConfig, data: DecoderData
) -> tuple[np.ndarray, str] | None:
    """The structure decoder's first-frame latents of the test clips, decoded from their fMRI as the motion generator
    starts from at inference, with their source; None if ``decoders_dir`` holds no structure decoder."""
    if not (decoders_dir / "structure" / "config.json").is_file():
        return None
    model = DECODERS["structure"].from_pretrained(decoders_dir / "structure")
    stage = make_stage("structure", config.stages["structure"], data)
    return stage.predict(model, data.volume("test")), "structure decoder"


def thumbnails(frames: np.ndarray, size: int = 16) -> np.ndarray:
    """uint8 frames (n, h, w, 3) → area-averaged thumbnails (n, size, size, 3) in [0, 1] (any h, w)."""
    return torch.nn.functional.adaptive_avg_pool2d(to_tensor(frames), size).permute(0, 2, 3, 1).numpy()


def evaluate_stage(
    name: str,
    model: torch.nn.Module,
    config: DecodersConfig,
    data: DecoderData,
    seed: int = 0,
    first_latents: tuple[np.ndarray, str] | None = None,
) -> dict:
    """Test-split metrics of one stage, with its ridge baseline and controls (see the module docstring).

    ``first_latents``: for the motion stage, the decoded first latents of the test clips and their source
    (:func:`pipeline_first_latents`); by default the structure ridge's.
    """
    stage = make_stage(name, config.stages[name], data)
    test = data.splits["test"]
    shuffle = np.random.default_rng(seed).permutation(len(test))
    out: dict[str, Any] = {"n_test_clips": len(test)}
    if name in ("semantic", "fmri-encoder"):
        fmri = stage.inputs("test")
        embedding = stage.embed(model, fmri)
        out.update(_retrieval(embedding, data))
        out["shuffled_fmri_top10"] = _retrieval(stage.embed(model, fmri[shuffle]), data)["top10"]
        ridge = _ridge(data, lambda s: (stage.inputs(s),), lambda s: data.splits[s].text)
        out["ridge_top10"] = _retrieval(ridge, data)["top10"]
        out["beats_ridge"] = out["top10"] > out["ridge_top10"]
        hits = [caption_ranks(e, test.captions, test.text)[0] < TOP_K for e in (embedding, ridge)]
        out["ridge_paired_p"] = ridge_paired_p(*hits)  # per-clip top-10 hits
        out["target_met"] = out["top10"] >= RETRIEVAL_FACTOR * out["chance_top10"]
    elif name == "structure":
        fmri, target = data.volume("test"), test.latents[:, 0]
        predicted = stage.predict(model, fmri)
        out["mse"] = float(np.mean((predicted - target) ** 2))
        out["shuffled_fmri_mse"] = float(np.mean((stage.predict(model, fmri[shuffle]) - target) ** 2))
        out["mean_latent_mse"] = float(np.mean((data.splits["train"].latents[:, 0].mean(axis=0) - target) ** 2))
        ridge = _structure_ridge(data)
        out["ridge_mse"] = float(np.mean((ridge - target) ** 2))
        out["beats_ridge"] = out["mse"] < out["ridge_mse"]
        out["ridge_paired_p"] = ridge_paired_p(per_clip((predicted - target) ** 2), per_clip((ridge - target) ** 2))
    elif name == "motion":
        fmri, latents = data.volume("test"), test.latents
        generated = stage.predict(model, fmri, latents[:, 0])
        control = stage.predict(model, fmri[shuffle], latents[:, 0])
        out["mse"] = float(np.mean((generated[:, 1:] - latents[:, 1:]) ** 2))
        out["shuffled_fmri_mse"] = float(np.mean((control[:, 1:] - latents[:, 1:]) ** 2))
        out["repeat_first_mse"] = float(np.mean((latents[:, :1] - latents[:, 1:]) ** 2))
        ridge_motion = _fit(
            data, lambda s: (data.volume(s), data.splits[s].latents[:, 0]), lambda s: data.splits[s].latents[:, 1:]
        )
        ridge = ridge_motion.predict(flatten(fmri, latents[:, 0])).reshape(latents[:, 1:].shape)
        out["ridge_mse"] = float(np.mean((ridge - latents[:, 1:]) ** 2))
        out["beats_ridge"] = out["mse"] < out["ridge_mse"]
        out["ridge_paired_p"] = ridge_paired_p(
            per_clip((generated[:, 1:] - latents[:, 1:]) ** 2), per_clip((ridge - latents[:, 1:]) ** 2)
        )
        ridge_video = np.concatenate([latents[:, :1], ridge], axis=1)
        for key, video in (("", generated), ("shuffled_fmri_", control), ("ridge_", ridge_video)):
            out[f"{key}motion_cosine"] = motion_cosine(video, latents)
            out[f"{key}shuffle_test"] = _shuffle_test(video, latents, seed)
        if first_latents is None:
            first_latents = _structure_ridge(data).astype(np.float32), "structure ridge"
        first, source = first_latents
        ridge = ridge_motion.predict(flatten(fmri, first)).reshape(latents[:, 1:].shape)
        path: dict[str, Any] = {"first_frame": source, "n_fmri_shuffles": N_FMRI_SHUFFLES}
        for key, video in (
            ("", stage.predict(model, fmri, first)),
            ("ridge_", np.concatenate([first[:, None], ridge], 1)),
        ):
            path[f"{key}motion_cosine"] = motion_cosine(video, latents)
            path[f"{key}shuffle_test"] = _shuffle_test(video, latents, seed)
        orders = [shuffle] + [
            np.random.default_rng([seed, k]).permutation(len(test)) for k in range(1, N_FMRI_SHUFFLES)
        ]
        for key, whole_path in (("shuffled_fmri", True), ("generator_shuffled_fmri", False)):
            cosines = []
            for k, o in enumerate(orders):  # one video at a time: each is as large as the test latents
                video = stage.predict(model, fmri[o], first[o] if whole_path else first)
                cosines.append(motion_cosine(video, latents))
                if k == 0:  # the shuffle test of the first permutation, as on the first-frame-given path
                    first_test = _shuffle_test(video, latents, seed)
            path[key] = {
                "motion_cosine": cosines[0],
                "shuffle_test": first_test,
                "motion_cosines": cosines,
                "fmri_permutation_p": (1 + sum(c >= path["motion_cosine"] for c in cosines)) / (1 + len(cosines)),
            }
        path["target_met"] = path["shuffle_test"]["p_mean"] < SHUFFLE_P and all(
            path[key]["fmri_permutation_p"] < SHUFFLE_P for key in ("shuffled_fmri", "generator_shuffled_fmri")
        )
        out["pipeline"] = path
        out["target_met"] = path["target_met"]
    elif name == "flow":
        target = test.flows
        predicted, control = (stage.predict(model, fmri, test.first_frames) for fmri in (test.fmri, test.fmri[shuffle]))
        out["epe"] = end_point_error(predicted, target, axis=-3)
        out["shuffled_fmri_epe"] = end_point_error(control, target, axis=-3)
        out["zero_epe"] = end_point_error(np.zeros_like(target), target, axis=-3)
        ridge = _ridge(
            data,
            lambda s: (data.splits[s].fmri, thumbnails(data.splits[s].first_frames)),
            lambda s: data.splits[s].flows,
        )
        out["ridge_epe"] = end_point_error(ridge.reshape(target.shape), target, axis=-3)
        out["beats_ridge"] = out["epe"] < out["ridge_epe"]
        out["ridge_paired_p"] = ridge_paired_p(
            per_clip(np.linalg.norm(predicted - target, axis=-3)),
            per_clip(np.linalg.norm(ridge.reshape(target.shape) - target, axis=-3)),
        )
        out["target_met"] = out["epe"] < out["zero_epe"] and out["epe"] < out["shuffled_fmri_epe"]
    return out


def evaluate_decoders(decoders_dir: str | Path, config: DecodersConfig, data: DecoderData, seed: int = 0) -> dict:
    """Evaluate every stage saved under ``decoders_dir``; also writes ``decoders_dir/evaluation.json``.

    Raises
    ------
    FileNotFoundError
        If no stage has been trained there.
    """
    decoders_dir = Path(decoders_dir)
    found = [s for s in STAGES if (decoders_dir / s / "config.json").is_file()]
    if not found:
        raise FileNotFoundError(
            f"{decoders_dir}: expected at least one trained stage folder among {list(STAGES)} (python -m pipelines "
            "train --stage ... --out this folder), found none."
        )
    results: dict[str, Any] = {"simulated": data.splits["test"].category is not None, "split": "test"}
    for name in found:
        model = DECODERS[name].from_pretrained(decoders_dir / name)
        first = pipeline_first_latents(decoders_dir, config, data) if name == "motion" else None
        results[name] = evaluate_stage(name, model, config, data, seed, first)
    (decoders_dir / "evaluation.json").write_text(json.dumps(results, indent=1))
    return results


def _p(result: dict) -> str:
    """The paired test against ridge, as a table suffix (absent in evaluations written before it existed)."""
    return f" (paired p {result['ridge_paired_p']:.2g})" if "ridge_paired_p" in result else ""


def _table(results: dict) -> str:
    lines = ["| stage | metric | decoder | ridge | controls |", "|---|---|---|---|---|"]
    for name in STAGES:
        r = results.get(name)
        if r is None:
            continue
        if name in ("semantic", "fmri-encoder"):
            lines.append(
                f"| {name} | caption top-10 | {r['top10']:.3f} | {r['ridge_top10']:.3f}{_p(r)} | chance "
                f"{r['chance_top10']:.3f}, shuffled fMRI {r['shuffled_fmri_top10']:.3f} |"
            )
        elif name == "structure":
            lines.append(
                f"| structure | latent MSE | {r['mse']:.4f} | {r['ridge_mse']:.4f}{_p(r)} | mean latent "
                f"{r['mean_latent_mse']:.4f}, shuffled fMRI {r['shuffled_fmri_mse']:.4f} |"
            )
        elif name == "motion":
            lines.append(
                f"| motion | latent MSE, frames 1… | {r['mse']:.4f} | {r['ridge_mse']:.4f}{_p(r)} | first frame repeated "
                f"{r['repeat_first_mse']:.4f}, shuffled fMRI {r['shuffled_fmri_mse']:.4f} |"
            )
            lines.append(
                f"| motion | shuffle test p (motion cosine) | {r['shuffle_test']['p_mean']:.3f} ± "
                f"{r['shuffle_test']['p_std']:.3f} | {r['ridge_shuffle_test']['p_mean']:.3f} | shuffled fMRI "
                f"{r['shuffled_fmri_shuffle_test']['p_mean']:.3f} ± {r['shuffled_fmri_shuffle_test']['p_std']:.3f} |"
            )
            if "pipeline" in r:
                q = r["pipeline"]
                lines.append(
                    f"| motion | shuffle test p, first frame from the {q['first_frame']} | "
                    f"{q['shuffle_test']['p_mean']:.3f} ± {q['shuffle_test']['p_std']:.3f} | "
                    f"{q['ridge_shuffle_test']['p_mean']:.3f} | shuffled fMRI {q['shuffled_fmri']['shuffle_test']['p_mean']:.3f}"
                    f", generator's fMRI shuffled {q['generator_shuffled_fmri']['shuffle_test']['p_mean']:.3f} |"
                )
                lines.append(
                    f"| motion | motion cosine, first frame from the {q['first_frame']} | {q['motion_cosine']:.4f} | "
                    f"{q['ridge_motion_cosine']:.4f} | p over {q['n_fmri_shuffles']} fMRI shuffles: whole path "
                    f"{q['shuffled_fmri']['fmri_permutation_p']:.3f}, generator only "
                    f"{q['generator_shuffled_fmri']['fmri_permutation_p']:.3f} |"
                )
        elif name == "flow":
            lines.append(
                f"| flow | EPE (grid px) | {r['epe']:.3f} | {r['ridge_epe']:.3f}{_p(r)} | zero {r['zero_epe']:.3f}, "
                f"shuffled fMRI {r['shuffled_fmri_epe']:.3f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from pipelines.training.decoders.train import add_data_arguments, load_data, parse_data_arguments

    parser = argparse.ArgumentParser(prog="python -m pipelines evaluate-decoders", description=__doc__.split("\n")[0])
    parser.add_argument("--decoders", required=True, help="the folder train --out wrote")
    add_data_arguments(parser)  # --config and overrides: those the decoders were trained with
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parse_data_arguments(parser, argv)
    try:
        config = load_decoders_config(args.config, args.overrides)
        data = load_data(config, args.data, args.backbones, args.tier, args.cache_dir)
        results = evaluate_decoders(args.decoders, config, data, args.seed)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        if results["simulated"]:
            print("Simulated subject (not human data).")
        print(_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
