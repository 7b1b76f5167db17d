"""``python -m pipelines tune-bundle``: choose a bundle's rendering settings on the **validation** split.

Rendering has settings no decoder learns (how much the flow-animated first frame weighs in the layout, the guidance
scale, ...). Choosing them on the test clips would make every test number optimistic, so this command reconstructs
the subject's validation clips for each point of a grid, scores each under one protocol, and writes the best point
into the bundle's ``bundle.json`` (``reconstruction``) together with a ``tuning`` record: the split, the clips, the
objective and every point's scores. The test clips are never read.

Steps: (1) open the bundle and the subject's validation split (the first ``--limit`` clips); (2) for each grid point,
reconstruct them (cached under ``--out/videos``, so an interrupted run resumes); (3) measure the protocol's metrics;
(4) choose the point with the best ``--objective`` (the first on ties); write ``tuning.json`` under ``--out`` and,
unless ``--dry-run``, the chosen values into the bundle.

Example (the demo bundle's flow guidance)::

    python -m pipelines tune-bundle --bundle runs/bundle --data data/demo --backbones runs/backbones \\
        --cache-dir data/cache --grid flow_space=pixel,latent --grid flow_weight=0,0.25,0.5,0.75,1 --objective epe
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.config import config_hash, from_dict
from pipelines.evaluation.evaluate import (
    LOWER_IS_BETTER,
    bundle_hash,
    measure_protocol,
    reconstruct_condition,
    write_json,
)
from pipelines.evaluation.harness import load_evaluation_backbones
from pipelines.evaluation.protocols import PROTOCOLS, load_protocol
from pipelines.reconstruct import BUNDLE_JSON, BundleClips, ReconstructionConfig, VideoReconstructionPipeline

TUNING_SPLIT = "val"


def split_clips(data, split: str = TUNING_SPLIT, limit: int | None = None) -> BundleClips:
    """The clips of one split of the decoders' data (:class:`DecoderData`) in the form a bundle ships its test clips.

    Raises
    ------
    ValueError
        If ``split`` is ``"test"`` (tuning must not see the test clips) or unknown.
    """
    if split == "test":
        raise ValueError(
            "split: expected a training or validation split, got 'test' (settings are never chosen on it)."
        )
    if split not in data.splits:
        raise ValueError(f"split: expected one of {sorted(data.splits)}, got {split!r}.")
    decoded = data.splits[split]
    n = len(decoded) if limit is None else min(limit, len(decoded))
    return BundleClips(
        fmri=np.ascontiguousarray(decoded.fmri[:n], np.float32),
        frames=np.array(data.dataset.splits[split].frames[:n], np.uint8),
        captions=[str(c) for c in decoded.captions[:n]],
        category=None if decoded.category is None else np.asarray(decoded.category[:n]),
        direction=None if decoded.direction is None else np.asarray(decoded.direction[:n]),
    )


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``["flow_weight=0,0.5", "flow_space=pixel"]`` → ``{"flow_weight": [0, 0.5], "flow_space": ["pixel"]}``.

    Values are JSON where they parse (numbers, booleans), else strings.

    Raises
    ------
    ValueError
        For an item without ``=``, an empty value list, a repeated field or a field ReconstructionConfig lacks.
    """
    grid: dict[str, list[Any]] = {}
    fields = set(ReconstructionConfig.__dataclass_fields__) - {"schedule"}
    for item in items:
        name, sep, text = item.partition("=")
        values = [v for v in text.split(",") if v.strip()]
        if not sep or not values:
            raise ValueError(f"--grid: expected FIELD=VALUE[,VALUE...], got {item!r}.")
        if name not in fields:
            raise ValueError(f"--grid: expected a ReconstructionConfig field from {sorted(fields)}, got {name!r}.")
        if name in grid:
            raise ValueError(f"--grid: field {name!r} given twice; list all its values in one --grid.")
        parsed = []
        for value in values:
            try:
                parsed.append(json.loads(value))
            except json.JSONDecodeError:
                parsed.append(value.strip())
        grid[name] = parsed
    if not grid:
        raise ValueError("--grid: expected at least one FIELD=VALUE[,VALUE...].")
    return grid


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, the last field varying fastest."""
    names = list(grid)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*grid.values())]


def choose(scores: list[dict[str, Any]], objective: str) -> int:
    """Index of the point with the best ``objective`` mean (lowest for EPE, highest otherwise; the first on ties).

    Raises
    ------
    ValueError
        If the objective was not measured.
    """
    values = []
    for entry in scores:
        summary = entry["metrics"].get(objective)
        if summary is None or summary.get("mean") is None:
            raise ValueError(
                f"--objective: {objective!r} was not measured; expected one of "
                f"{sorted(k for k, v in entry['metrics'].items() if v.get('mean') is not None)}."
            )
        values.append(summary["mean"])
    values = np.asarray(values)
    return int(np.argmin(values) if objective in LOWER_IS_BETTER else np.argmax(values))


def tune_bundle(
    bundle: str | Path,
    clips: BundleClips,
    grid: dict[str, list[Any]],
    objective: str,
    protocol: str,
    backbones_dir: str | Path | None,
    out: str | Path,
    tier: str = "demo",
    batch_size: int = 8,
    write: bool = True,
    split: str = TUNING_SPLIT,
) -> dict:
    """Score every grid point on ``clips`` and (``write``) put the best into ``bundle/bundle.json``.

    Returns
    -------
    dict
        The tuning record (also ``out/tuning.json``): ``split``, ``n_clips``, ``protocol``, ``objective``, ``grid``,
        ``scores`` (each point's values and metric summaries), ``chosen`` (the values) and ``chosen_index``.
    """
    bundle, out = Path(bundle), Path(out)
    if len(clips) < 2:
        raise ValueError(
            f"clips: expected at least 2 validation clips (the n-way metrics compare clips), got {len(clips)}."
        )
    pipeline = VideoReconstructionPipeline.from_pretrained(bundle)
    loaded = load_protocol(protocol)
    backbones = load_evaluation_backbones(loaded, tier, backbones_dir)
    bundle_key = bundle_hash(bundle)
    base = pipeline.config
    scores = []
    for point in grid_points(grid):
        pipeline.config = replace(base, **point)
        key = config_hash({"bundle": bundle_key, "split": split, "n": len(clips), "config": asdict(pipeline.config)})
        name = config_hash(point)
        video = reconstruct_condition(pipeline, clips.fmri, "full", batch_size, out / "videos" / name, key).frames
        summary, _ = measure_protocol(video, clips.frames, pipeline.info.fps, loaded, backbones, clips.category)
        scores.append({"values": point, "metrics": summary})
        print(f"{point}: {objective} {summary.get(objective, {}).get('mean')}", flush=True)
    best = choose(scores, objective)
    record = {
        "split": split,
        "n_clips": len(clips),
        "protocol": protocol,
        "objective": objective,
        "lower_is_better": objective in LOWER_IS_BETTER,
        "grid": grid,
        "scores": scores,
        "chosen_index": best,
        "chosen": scores[best]["values"],
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "tuning.json").write_text(json.dumps(record, indent=1))
    if write:
        write_tuning(bundle, record)
    return record


def write_tuning(bundle: str | Path, record: dict) -> Path:
    """Set the chosen values in ``bundle/bundle.json`` and keep the record (without per-point metrics) beside them.

    Raises
    ------
    ValueError
        If a chosen value is not valid for ReconstructionConfig (nothing is written then).
    """
    path = Path(bundle) / BUNDLE_JSON
    manifest = json.loads(path.read_text())
    reconstruction = dict(manifest["reconstruction"], **record["chosen"])
    from_dict(ReconstructionConfig, reconstruction, where=f"{path} (reconstruction)")  # check before writing
    manifest["reconstruction"] = reconstruction
    manifest["tuning"] = {
        **{k: record[k] for k in ("split", "n_clips", "protocol", "objective", "grid", "chosen")},
        "objective_by_point": [
            {"values": s["values"], record["objective"]: s["metrics"][record["objective"]]["mean"]}
            for s in record["scores"]
        ],
    }
    return write_json(path, manifest, indent=2)


def main(argv: list[str] | None = None) -> int:
    from pipelines.training.decoders.config import load_decoders_config
    from pipelines.training.decoders.train import add_data_arguments, load_data, parse_data_arguments

    parser = argparse.ArgumentParser(prog="python -m pipelines tune-bundle", description=__doc__.split("\n\n")[0])
    add_data_arguments(parser)
    parser.add_argument("--bundle", required=True, help="the bundle folder to tune (build-bundle --out)")
    parser.add_argument("--grid", action="append", required=True, metavar="FIELD=V1,V2",
                        help="a ReconstructionConfig field and its candidate values (repeat for a product grid)")  # fmt: skip
    parser.add_argument(
        "--objective", default="epe", help="the metric to optimise (EPE is minimised, others maximised)"
    )
    parser.add_argument("--protocol", default="mind-animator", help=f"one of {list(PROTOCOLS)} or a protocol YAML file")
    parser.add_argument("--limit", type=int, default=100, help="validation clips to reconstruct (default 100)")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per pipeline call")
    parser.add_argument("--out", default="runs/tuning", help="tuning.json and cached videos")
    parser.add_argument("--dry-run", action="store_true", help="report the best point without writing the bundle")
    args = parse_data_arguments(parser, argv)
    try:
        grid = parse_grid(args.grid)
        config = load_decoders_config(args.config, args.overrides)
        data = load_data(config, args.data, args.backbones, args.tier, args.cache_dir)
        clips = split_clips(data, TUNING_SPLIT, args.limit)
        record = tune_bundle(
            args.bundle, clips, grid, args.objective, args.protocol, args.backbones, args.out, args.tier,
            args.batch_size, write=not args.dry_run,
        )  # fmt: skip
        if not args.dry_run:
            from pipelines.bundle import record_command

            record_command(args.bundle, "tune-bundle", sys.argv[1:] if argv is None else argv)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    where = "written to " + str(Path(args.bundle) / BUNDLE_JSON) if not args.dry_run else "not written (--dry-run)"
    print(f"chosen on {record['n_clips']} {record['split']} clips: {record['chosen']} ({where})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
