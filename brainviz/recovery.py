"""``python -m pipelines attribution``: do the decoders' attributions find the simulated brain's ground truth?

On the simulated subject every grayordinate has a known role (structure: pRF-tuned V1–V4; motion: direction-tuned
MT, MST, FST, V4t; semantic: category-tuned ventral and lateral areas; none elsewhere). For each trained decoder,
the mean |attribution| per selected voxel over test clips should be high on the voxels of the role it decodes:

| decoder | role |
|---|---|
| semantic, fmri-encoder | semantic |
| structure | structure |
| motion, flow | motion |

The score is the ROC AUC of mean |attribution| in separating the role's voxels from all other selected voxels (0.5 =
no better than chance, 1 = every role voxel above every other voxel). Also reported: each Glasser ROI group's share
of the attribution.

The default method is ``pattern``: each clip's gradient turned into an activation pattern with the covariance of the
decoder's training inputs (:class:`brainviz.attribution.InputCovariance`; Haufe et al. 2014). Raw gradients and
integrated gradients are a backward model's weights, which need not be large where the information is; ``--method
saliency`` or ``integrated_gradients`` scores them instead (README, "brainviz", has all three).

The embedding decoders (semantic, fmri-encoder) are asked by default about the clip's simulated category
(``objective="category"``): their evidence for it, against prototypes from the training split. The simulator's
semantic role is category tuning, while a caption embedding also names the colour, the direction and the camera,
which the structure and motion voxels carry; attributing the cosine to the whole target embedding
(``--objective target``) mixes those in (README, "brainviz"). The other decoders always use their ``target``
objective (:mod:`brainviz.attribution`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from brainviz.attribution import (
    EMBEDDING_DECODERS,
    METHODS,
    OBJECTIVES,
    InputCovariance,
    attribute,
    category_prototypes,
    decoder_objective,
    role_recovery_auc,
)

ROLE_OF = {"semantic": "semantic", "fmri-encoder": "semantic", "structure": "structure", "motion": "motion",
           "flow": "motion"}  # fmt: skip


def decoder_inputs(decoder: str, config: Any, data: Any, split: str, index: np.ndarray) -> dict[str, np.ndarray]:
    """What :func:`attribute` and :func:`decoder_objective` need for clips ``index`` of ``split``.

    Returns a dict with ``inputs`` (the decoder's fMRI input, as its training stage defines it), ``reference`` (the
    ground-truth target), ``first`` (the held-fixed first latent or frame, or None) and, for the embedding decoders,
    ``category`` (the clips' simulated category indices, or None for real data).
    """
    from pipelines.training.decoders.stages import make_stage

    s = data.splits[split]
    inputs = make_stage(decoder, config.stages[decoder], data).inputs(split)[index]
    if decoder in EMBEDDING_DECODERS:
        category = None if s.category is None else s.category[index]
        return {"inputs": inputs, "reference": s.text[index], "first": None, "category": category}
    if decoder == "structure":
        return {"inputs": inputs, "reference": s.latents[index, 0], "first": None}
    if decoder == "motion":
        return {"inputs": inputs, "reference": s.latents[index], "first": s.latents[index, 0]}
    return {"inputs": inputs, "reference": s.flows[index], "first": s.first_frames[index]}


def recover(
    decoders_dir: str | Path,
    config: Any,
    data: Any,
    roles: np.ndarray,
    *,
    method: str = "pattern",
    objective: str = "category",
    n_clips: int = 32,
    n_steps: int = 32,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Attribute every trained decoder on ``n_clips`` evenly spaced test clips and score role recovery.

    Parameters
    ----------
    roles : array of shape (n_voxels,), str
        The simulated role of each selected voxel ("none", "structure", "motion", "semantic").
    objective : {"category", "target"}
        "category" (default) attributes the embedding decoders' evidence for the clip's category (module
        docstring), "target" their cosine to the target embedding; the other decoders always use their target
        objective. The output's ``objectives`` says which each decoder used. Test
        clips of a category the training split lacks have no prototype and are left out, for every decoder alike.

    Raises
    ------
    FileNotFoundError
        If no decoder has been trained under ``decoders_dir``.
    ValueError
        For an unknown objective, or "category" on data without simulated categories.
    """
    from pipelines.models.registry import DECODERS
    from pipelines.training.decoders.stages import make_stage

    if objective not in OBJECTIVES:
        raise ValueError(f"objective: expected one of {list(OBJECTIVES)}, got {objective!r}.")
    train = data.splits["train"]
    if objective == "category" and train.category is None:
        raise ValueError("objective 'category': expected a simulated subject with category labels, got none.")
    decoders_dir = Path(decoders_dir)
    found = [d for d in DECODERS if (decoders_dir / d / "config.json").is_file()]
    if not found:
        raise FileNotFoundError(f"{decoders_dir}: expected trained decoder folders among {list(DECODERS)}, found none.")
    n_test = len(data.splits["test"])
    index = np.unique(np.linspace(0, n_test - 1, min(n_clips, n_test)).round().astype(int))
    prototypes, seen = None, None
    if objective == "category":  # prototypes from the training split only, for the categories it has
        seen = np.unique(train.category)
        prototypes = category_prototypes(train.text, np.searchsorted(seen, train.category), len(seen))
        index = index[np.isin(data.splits["test"].category[index], seen)]  # a category never trained on: no prototype
        if not len(index):
            raise ValueError(
                "objective 'category': expected test clips of categories the training split has, got none."
            )
    out: dict[str, Any] = {
        "simulated": True,
        "split": "test",
        "method": method,
        "n_clips": len(index),
        "n_steps": n_steps if method == "integrated_gradients" else None,
        "objectives": {d: objective if d in EMBEDDING_DECODERS else "target" for d in found},
        "role_voxels": {r: int((roles == r).sum()) for r in ("structure", "motion", "semantic", "none")},
        "auc": {},
        "mean_abs_delta": {},
        "seconds_per_clip": {},
    }
    maps = {}
    for name in found:
        model = DECODERS[name].from_pretrained(decoders_dir / name)
        covariance = None
        if method == "pattern":  # the training split's inputs, never the attributed test clips
            covariance = InputCovariance(make_stage(name, config.stages[name], data).inputs("train"))
        total, deltas, seconds = np.zeros(data.n_voxels), [], 0.0
        for start in tqdm(range(0, len(index), batch_size), desc=f"attribution {name}", leave=False):
            part = decoder_inputs(name, config, data, "test", index[start : start + batch_size])
            if out["objectives"][name] == "category":
                labels = np.searchsorted(seen, part["category"])  # positions among the prototypes
                scalar = decoder_objective(name, model, labels, objective="category", prototypes=prototypes)
            else:
                scalar = decoder_objective(name, model, part["reference"], first=part["first"])
            result = attribute(scalar, part["inputs"], method, n_steps=n_steps, covariance=covariance)
            total += result.voxel_map(absolute=True).sum(axis=0)
            seconds += result.seconds
            if result.delta is not None:
                deltas.append(np.abs(result.delta))
        maps[name] = total / len(index)
        out["auc"][name] = role_recovery_auc(maps[name], roles == ROLE_OF[name])
        out["seconds_per_clip"][name] = seconds / len(index)
        out["mean_abs_delta"][name] = float(np.concatenate(deltas).mean()) if deltas else None
    out["roi_shares"] = _roi_shares(maps, data.dataset.voxel_grayordinates)
    return out


def _roi_shares(maps: dict[str, np.ndarray], voxel_grayordinates: np.ndarray) -> dict[str, dict[str, float]]:
    from brainviz.rois import roi_table
    from brainviz.surfaces import voxels_to_grayordinates

    table = roi_table({k: voxels_to_grayordinates(v, voxel_grayordinates) for k, v in maps.items()})
    return {str(k): {str(g): float(v) for g, v in row.items()} for k, row in table.iterrows()}


def voxel_roles(root: str | Path, voxel_grayordinates: np.ndarray) -> np.ndarray:
    """Simulated role name of each selected voxel, (n_voxels,) str ("none" for voxels without a grayordinate)."""
    from pipelines.data.twin.brain import ROLES
    from pipelines.data.twin.groundtruth import load_tuning

    role = load_tuning(root).role
    g = np.asarray(voxel_grayordinates)
    return np.where(g >= 0, np.asarray(ROLES)[role[np.maximum(g, 0)]], "none")


def main(argv: list[str] | None = None) -> int:
    from pipelines.data.twin.groundtruth import is_simulated
    from pipelines.training.decoders.config import load_decoders_config
    from pipelines.training.decoders.train import add_data_arguments, load_data, parse_data_arguments

    parser = argparse.ArgumentParser(prog="python -m pipelines attribution", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--bundle", help="a bundle folder (build-bundle --out): its decoders/ are attributed")
    source.add_argument("--decoders", help="the folder train --out wrote")
    add_data_arguments(parser)
    parser.add_argument(
        "--method", default="pattern", choices=METHODS, help="default: pattern (gradients × training covariance)"
    )
    parser.add_argument(
        "--objective",
        default="category",
        choices=OBJECTIVES,
        help="semantic and fmri-encoder: evidence for the clip's simulated category (default) or cosine to the "
        "target embedding",
    )
    parser.add_argument("--n-clips", type=int, default=32, help="evenly spaced test clips (default 32)")
    parser.add_argument("--n-steps", type=int, default=32, help="integrated-gradients steps (default 32)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parse_data_arguments(parser, argv)
    if not is_simulated(args.data):
        print(f"error: {args.data} is not a simulated subject; ground-truth recovery needs its roles.", file=sys.stderr)
        return 1
    try:
        config = load_decoders_config(args.config, args.overrides)
        data = load_data(config, args.data, args.backbones, args.tier, args.cache_dir)
        roles = voxel_roles(args.data, data.dataset.voxel_grayordinates)
        decoders = args.decoders if args.bundle is None else Path(args.bundle) / "decoders"
        result = recover(decoders, config, data, roles, method=args.method, objective=args.objective,
                         n_clips=args.n_clips, n_steps=args.n_steps)  # fmt: skip
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(
        f"Simulated subject (not human data): ROC AUC of mean |attribution| ({args.method}) for the decoder's "
        "simulated role."
    )
    print("| decoder | role | objective | AUC | s / clip |\n|---|---|---|---|---|")
    for name, auc in result["auc"].items():
        used, seconds = result["objectives"][name], result["seconds_per_clip"][name]
        print(f"| {name} | {ROLE_OF[name]} | {used} | {auc:.3f} | {seconds:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
