"""Reference rows of each protocol on a data set's test clips: what the metrics give without any decoding.

Pixel and embedding metrics have no analytic chance level, so a reconstruction's SSIM of 0.3 means little until
it is set beside these rows, computed under the same protocol on the same clips:

- ``identity``: the ground truth itself (the ceiling of every metric);
- ``static``: each clip's first ground-truth frame repeated (the video "motion off" gives; EPE of a still video);
- ``shuffled``: another test clip's ground truth (a seeded derangement): the empirical chance level.

``python -m pipelines evaluate-references --data DIR --backbones DIR [--protocol NAME|all] [--limit N]
[--out DIR] [--json]`` writes ``references.json`` and ``references.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.data import video
from pipelines.data.cc2017 import CC2017Config, discover_runs
from pipelines.evaluation.harness import evaluate_videos, iter_clips, load_evaluation_backbones
from pipelines.evaluation.protocols import PROTOCOLS, Protocol, load_protocol

REFERENCES = ("identity", "static", "shuffled")
BATCH = 16


def ground_truth_clips(root: str | Path, protocol: Protocol, limit: int | None = None) -> np.ndarray:
    """The protocol's frames of every test clip of a CC2017-layout data set, in order (test1 clip 1, 2, …).

    Clip k of a movie starts at k TRs; its frames are those shown at k·TR + j / fps. Frames keep the movie's size
    when it is below the protocol's resolution (the harness resizes them), so memory stays small.

    Returns
    -------
    array of shape (n_clips, protocol.n_frames, height, width, 3), uint8
    """
    config = CC2017Config()
    _, test_runs = discover_runs(root, config)
    clips = []
    for run in test_runs:
        info = video.probe_video(run.video)
        n = run.n_movie_trs if limit is None else min(run.n_movie_trs, limit - sum(map(len, clips)))
        if n <= 0:
            break
        times = np.arange(n)[:, None] * config.tr + np.arange(protocol.n_frames)[None, :] / protocol.fps
        indices = np.minimum(np.floor(times * info.fps + 1e-6).astype(np.int64), info.n_frames - 1)
        size = None if min(info.height, info.width) <= protocol.resolution else (protocol.resolution,) * 2
        frames = video.read_frames(run.video, indices.ravel(), size)
        clips.append(frames.reshape(n, protocol.n_frames, *frames.shape[1:]))
    return np.concatenate(clips)


def reference_videos(name: str, target: np.ndarray, seed: int = 0) -> np.ndarray:
    """The reference ``name`` (one of REFERENCES) for ground-truth videos (n_clips, n_frames, h, w, 3)."""
    if name == "identity":
        return target
    if name == "static":
        return np.repeat(target[:, :1], target.shape[1], axis=1)
    if name == "shuffled":
        if len(target) < 2:
            raise ValueError(f"shuffled: expected at least 2 clips to shuffle, got {len(target)}.")
        order = np.random.default_rng(seed).permutation(len(target))
        return target[np.roll(order, 1)][np.argsort(order)]  # clip order[i] gets clip order[i-1]: never itself
    raise ValueError(f"reference: expected one of {list(REFERENCES)}, got {name!r}.")


def evaluate_references(
    root: str | Path,
    protocols: list[Protocol],
    backbones_dir: str | Path | None,
    tier: str = "demo",
    limit: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Every reference row under every protocol; see the module docstring."""
    root = Path(root)
    results: dict[str, Any] = {"simulated": (root / "groundtruth" / "twin.json").is_file(), "protocols": {}}
    for protocol in protocols:
        start = time.perf_counter()
        target = ground_truth_clips(root, protocol, limit)
        backbones = load_evaluation_backbones(protocol, tier, backbones_dir)
        rows = {}
        for name in REFERENCES:
            predicted = reference_videos(name, target, seed)
            batches = zip(iter_clips(predicted, BATCH), iter_clips(target, BATCH), strict=True)
            rows[name], _ = evaluate_videos(batches, protocol, backbones, seed, len(target), progress)
        results["protocols"][protocol.name] = {
            "references": rows,
            "n_clips": len(target),
            "backbones": backbones.names(),
            "seconds": round(time.perf_counter() - start, 1),
        }
    return results


def _cell(entry: dict[str, Any]) -> str:
    if entry.get("mean") is None:
        return "n/a"
    return f"{entry['mean']:.3f} ± {entry['std']:.3f}"


def markdown(results: dict[str, Any]) -> str:
    """One table per protocol: a row per reference, a column per metric (chance levels in the header)."""
    lines = ["Simulated subject (not human data).", ""] if results["simulated"] else []
    for name, block in results["protocols"].items():
        rows = block["references"]
        columns = list(next(iter(rows.values())))
        header = [
            f"{m} (chance {rows['identity'][m]['chance']:.3f})" if "chance" in rows["identity"][m] else m
            for m in columns
        ]
        lines += [f"**{name}** ({block['n_clips']} test clips, {block['seconds']} s)", ""]
        lines += ["| reference | " + " | ".join(header) + " |", "|---" * (len(columns) + 1) + "|"]
        lines += [f"| {ref} | " + " | ".join(_cell(row[m]) for m in columns) + " |" for ref, row in rows.items()]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines evaluate-references", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="a CC2017-layout data set (e.g. the simulated subject)")
    parser.add_argument("--backbones", help="the demo tier's folder (train-backbones --out)")
    parser.add_argument("--tier", choices=("demo", "full"), default="demo")
    parser.add_argument("--protocol", default="all", help=f"one of {list(PROTOCOLS)}, a YAML file, or 'all'")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a protocol field, e.g. --set n_way_trials=20 (repeatable)",
    )
    parser.add_argument("--limit", type=int, help="only the first N test clips")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write references.json and references.md here")
    parser.add_argument("--json", action="store_true", help="print the JSON instead of the tables")
    args = parser.parse_args(argv)
    try:
        names = list(PROTOCOLS) if args.protocol == "all" else [args.protocol]
        protocols = [load_protocol(name, args.overrides) for name in names]
        if args.limit is not None and args.limit < 2:
            raise ValueError(f"--limit: expected at least 2 clips (the shuffled reference needs 2), got {args.limit}.")
        results = evaluate_references(args.data, protocols, args.backbones, args.tier, args.limit, args.seed)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "references.json").write_text(json.dumps(results, indent=1) + "\n")
        (out / "references.md").write_text(markdown(results) + "\n")
    print(json.dumps(results, indent=1) if args.json else markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
