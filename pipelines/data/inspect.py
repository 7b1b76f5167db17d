"""``python -m pipelines inspect DIR``: run the CC2017 reader on a data set and summarise what it produced.

On a simulated subject it also scores the reader against the ground truth: the fraction of selected
grayordinates whose simulated role is not "none", and the encoding model's median test r (the simulated SNR).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.config import load_config, preset_path
from pipelines.data.cc2017 import CC2017Config, prepare_cc2017


def inspect(
    root: str | Path, config: CC2017Config | None = None, cache_dir: str | Path | None = None
) -> dict[str, Any]:
    """Summary of a CC2017-layout data set as the reader sees it (see the module docstring)."""
    from pipelines.data.twin import groundtruth

    config = config or load_config(CC2017Config, preset_path("data", "cc2017"))
    dataset = prepare_cc2017(root, config, cache_dir)
    summary = dataset.summary()
    summary["simulated"] = groundtruth.is_simulated(root)
    if summary["simulated"]:
        meta = groundtruth.load_meta(root)
        role = groundtruth.load_tuning(root).role[dataset.voxel_grayordinates]
        summary["preset"] = meta.get("preset")
        summary["selected_in_encoding_rois"] = float(np.mean(role > 0))
        summary["selected_by_role"] = {name: int(np.sum(role == k)) for k, name in enumerate(meta["roles"])}
        summary.update(groundtruth.encoding_performance(root, config))
    return summary


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines inspect``."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines inspect",
        description="Run the CC2017 reader (default config) on DIR and print a summary; on a simulated subject, "
        "also the ground-truth checks selected_in_encoding_rois and encoding_r_median.",
    )
    parser.add_argument("root", help="data set folder in the CC2017 layout (stimuli/, subject{k}/)")
    parser.add_argument("--config", help="reader config YAML (default: pipelines/configs/data/cc2017.yaml)")
    parser.add_argument("--cache-dir", help="cache root (default $MINDREEL_CACHE or ~/.cache/mindreel)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE reader config overrides, e.g. selection.n_voxels=3000")
    args = parser.parse_intermixed_args(argv)
    config = load_config(CC2017Config, args.config or preset_path("data", "cc2017"), args.overrides)
    summary = inspect(args.root, config, args.cache_dir)
    if args.json:
        print(json.dumps(summary))
    else:
        width = max(len(k) for k in summary)
        for key, value in summary.items():
            print(f"{key:<{width}}  {value}")
        if summary["simulated"]:
            print("\nSimulated subject: these numbers describe the simulator, not human data.")
    return 0
