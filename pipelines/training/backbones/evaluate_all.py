"""``python -m pipelines evaluate-backbones``: measure each demo-tier backbone on held-out simulated clips.

Every number comes from the simulated subject's test runs, which no backbone saw in training or selection. With
``--json`` one object: ``clip_top1``, ``clip_chance``, ``vae_psnr``, ``renderer_category_acc``,
``renderer_chance``, ``raft_epe``, ``tvl1_epe``, ``zero_flow_epe`` (and more), plus ``simulated: true`` and
``missing`` (roles without a saved model) and ``targets_met`` (each acceptance target of the backbone issue →
true / false, or null when not measured).
"""

from __future__ import annotations

import argparse
import importlib
import json
import operator
from pathlib import Path

from pipelines.training.backbones.data import load_backbone_data

EVALUATORS = {  # role → (module, function); the renderer also needs clip, vae and frame_classifier
    "clip": ("pipelines.training.backbones.clip", "evaluate_clip"),
    "frame_classifier": ("pipelines.training.backbones.classifier", "evaluate_classifier"),
    "vae": ("pipelines.training.backbones.vae", "evaluate_vae"),
    "unet": ("pipelines.training.backbones.unet", "evaluate_unet"),
    "raft": ("pipelines.training.backbones.raft", "evaluate_raft"),
}
NEEDS = {"unet": ("clip", "vae", "frame_classifier")}
# The backbone issue's acceptance targets: name → (score key, reference key or None, relation, factor or bound).
TARGETS = {
    "clip_top1 >= 5 x clip_chance": ("clip_top1", "clip_chance", ">=", 5.0),
    "vae_psnr >= 25 dB": ("vae_psnr", None, ">=", 25.0),
    "renderer_category_acc >= 3 x renderer_chance": ("renderer_category_acc", "renderer_chance", ">=", 3.0),
    "raft_epe < tvl1_epe": ("raft_epe", "tvl1_epe", "<", 1.0),
    "raft_epe <= zero_flow_epe / 3": ("raft_epe", "zero_flow_epe", "<=", 1 / 3),
}

RELATIONS = {">=": operator.ge, "<": operator.lt, "<=": operator.le}


def acceptance(results: dict) -> dict[str, bool | None]:
    """Each target of TARGETS → whether ``results`` meets it (None when a number it needs is missing)."""
    verdicts: dict[str, bool | None] = {}
    for name, (key, reference, relation, factor) in TARGETS.items():
        if key not in results or (reference is not None and reference not in results):
            verdicts[name] = None
            continue
        bound = factor * results[reference] if reference is not None else factor
        verdicts[name] = bool(RELATIONS[relation](results[key], bound))
    return verdicts


def evaluate_backbones(
    backbones_dir: str | Path,
    data_root: str | Path,
    device: str = "cpu",
    cache_dir: str | Path | None = None,
    options: dict[str, dict] | None = None,
) -> dict:
    """Evaluate every role saved in ``backbones_dir`` (see the module docstring).

    ``options`` maps a role to keyword arguments of its evaluator, e.g. ``{"clip": {"n_candidates": 100}}``.
    """
    backbones_dir = Path(backbones_dir)
    if not backbones_dir.is_dir():
        raise FileNotFoundError(f"{backbones_dir} does not exist; expected a folder written by train-backbones.")
    data = load_backbone_data(data_root, cache_dir)
    results: dict = {"simulated": True, "data_key": data.dataset.key, "missing": []}
    for role, (module, name) in EVALUATORS.items():
        needed = (role, *NEEDS.get(role, ()))
        if not all((backbones_dir / r / "meta.json").is_file() for r in needed):
            results["missing"].append(role)
            continue
        evaluate = getattr(importlib.import_module(module), name)
        results.update(evaluate(data, backbones_dir, device=device, **(options or {}).get(role, {})))
    results["targets_met"] = acceptance(results)
    return results


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines evaluate-backbones``."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines evaluate-backbones",
        description="Measure the demo-tier backbones on the simulated subject's test runs.",
    )
    parser.add_argument("--backbones", required=True, help="folder written by train-backbones")
    parser.add_argument("--data", required=True, help="the simulated subject the backbones were trained on")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache-dir", help="prepared-dataset cache (default $MINDREEL_CACHE)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--clip-candidates", type=int, default=100, help="captions per CLIP retrieval (default 100)")
    parser.add_argument("--renderer-samples", type=int, default=100, help="images sampled from test captions")
    parser.add_argument("--renderer-steps", type=int, default=25, help="DDIM steps per renderer sample")
    parser.add_argument("--raft-pairs", type=int, default=200, help="test frame pairs for the flow EPE")
    args = parser.parse_args(argv)
    options = {
        "clip": {"n_candidates": args.clip_candidates},
        "unet": {"n_samples": args.renderer_samples, "num_inference_steps": args.renderer_steps},
        "raft": {"n_pairs": args.raft_pairs},
    }
    results = evaluate_backbones(args.backbones, args.data, args.device, args.cache_dir, options)
    if args.json:
        print(json.dumps(results))
    else:
        for key, value in results.items():
            if key != "targets_met":
                print(f"{key:<24} {value:.4f}" if isinstance(value, float) else f"{key:<24} {value}")
        print()
        for name, met in results["targets_met"].items():
            print(f"{name:<48} {'not measured' if met is None else 'met' if met else 'NOT MET'}")
        print("\nSimulated subject: these numbers describe the demo backbones on simulated clips, not human data.")
    return 0
