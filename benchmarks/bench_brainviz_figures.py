"""Benchmark: build time and JSON payload of the cortical-surface figures, as a table (issue acceptance: sizes).

    python benchmarks/bench_brainviz_figures.py            # median of 3 warm builds per figure
    python benchmarks/bench_brainviz_figures.py --repeats 5

Each figure shows a random signed map over the 91,282 HCP grayordinates (the payload does not depend on the values:
colours travel as one '#rrggbb' string per vertex, geometry as base64 float32/int32 arrays). "build s" is the median
of warm builds (meshes and index maps already cached) of ``surface_figure`` plus ``fig.to_json()``, which is what a
``gr.Plot`` update costs on the server; the first call of a process also reads the meshes (printed below the table).
The payload limits are the issue's: a two-hemisphere fsLR-32k figure <= 4 MB, fsaverage5 <= 1.5 MB. The static PNG
(matplotlib via nilearn) has no payload limit; its row gives the file size.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from brainviz.surfaces import fsaverage5_mesh, fslr_mesh, save_static_png, surface_figure  # noqa: E402

MB = 1e6
FIGURES = [  # (label, surface_figure keywords, payload limit in MB)
    ("fsLR-32k inflated, lateral", {"space": "fslr"}, 4.0),
    ("fsLR-32k inflated, lateral, 3 ROI outlines", {"space": "fslr", "roi_outlines": ["V1", "MT", "FFC"]}, 4.0),
    ("fsLR-32k very_inflated, medial", {"space": "fslr", "mesh": "very_inflated", "view": "medial"}, 4.0),
    ("fsaverage5 inflated, lateral (resampled)", {"space": "fsaverage5"}, 1.5),
]


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median wall time of ``repeats`` calls, and the last result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="warm builds per figure (default 3)")
    args = parser.parse_args(argv)
    values = np.random.default_rng(0).standard_normal(91282).astype(np.float32)
    cold = {}
    for name, load in (("fsLR-32k meshes", lambda: fslr_mesh("inflated")), ("fsaverage5 mesh", fsaverage5_mesh)):
        cold[name], _ = timed(load, 1)
    first, _ = timed(lambda: surface_figure(values).to_json(), 1)  # also loads the 91k axis and the index maps
    lines = ["| figure | build s | JSON payload MB | limit MB | met |", "|---|---|---|---|---|"]
    all_met = True
    for label, kwargs, limit in FIGURES:
        seconds, payload = timed(lambda kwargs=kwargs: surface_figure(values, **kwargs).to_json(), args.repeats)
        size = len(payload) / MB
        met = size <= limit
        all_met &= met
        lines.append(f"| {label} | {seconds:.2f} | {size:.2f} | {limit:g} | {'yes' if met else 'NO'} |")
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "map.png"
        seconds, _ = timed(lambda: save_static_png(values, png, views=("lateral", "medial")), 1)
        lines.append(f"| static PNG, fsLR-32k, 2 views x 2 hemispheres ({png.stat().st_size / MB:.2f} MB file) "
                     f"| {seconds:.2f} | — | — | — |")  # fmt: skip
    print("\nbrainviz surface figures (median of warm builds, incl. to_json)\n")
    print("\n".join(lines))
    print(f"\nfirst call of a process: fsLR-32k mesh read {cold['fsLR-32k meshes']:.2f} s, fsaverage5 mesh "
          f"{cold['fsaverage5 mesh']:.2f} s (nilearn import), first fsLR figure {first:.2f} s; "
          f"{os.cpu_count()} CPU cores here. Payload limits {'all met' if all_met else 'NOT all met'}.")  # fmt: skip
    return 0 if all_met else 1


if __name__ == "__main__":
    sys.exit(main())
