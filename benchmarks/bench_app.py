"""Benchmark: the running app, driven as a user would (targets of issue #8 on 2 CPU cores).

Starts ``python app.py --bundle DIR`` in a subprocess, waits until the page answers, then drives it through
gradio_client: the first reconstruction, an ablation, a lesion, the first surface map and map switches.

    python benchmarks/bench_app.py --bundle runs/bundle
    python benchmarks/bench_app.py --bundle assets/demo --repeats 3

Targets: page ready ≤ 60 s after start, first reconstruction ≤ 5 s, a map switch ≤ 2 s. Each row after the first
reconstruction is the median of ``--repeats`` requests (each with another test clip, so no cache helps).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"page ready": 60.0, "first reconstruction": 5.0, "map switch (decoder)": 2.0, "map switch (surface)": 2.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, timeout: float) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited with code {process.returncode} before the page was ready.")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.perf_counter() - start
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"the page at {url} was not ready after {timeout:.0f} s.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default=str(ROOT / "assets" / "demo"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args(argv)

    from gradio_client import Client

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = dict(os.environ, GRADIO_SERVER_NAME="127.0.0.1", GRADIO_ANALYTICS_ENABLED="False")
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "--bundle", args.bundle, "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    rows: list[tuple[str, float]] = []
    try:
        wait_ready(url, process, args.timeout)
        rows.append(("page ready", time.perf_counter() - start))
        client = Client(url, verbose=False, download_files=False, analytics_enabled=False)

        def timed(fn, *a, **kw) -> float:
            t = time.perf_counter()
            fn(*a, **kw)
            return time.perf_counter() - t

        def reconstruct(index, ablate=(), lesion=()):
            return client.predict("test clip", index, None, 2, list(ablate), list(lesion), api_name="/reconstruct")

        def show(index, decoder="semantic", space="fsLR-32k inflated", label="attribution: Saliency"):
            return client.predict("test clip", index, None, 2, label, decoder, space, "lateral", api_name="/show_map")

        rows.append(("first reconstruction", timed(reconstruct, 0)))
        n = range(1, args.repeats + 1)
        rows.append(("reconstruction, another clip", statistics.median(timed(reconstruct, i) for i in n)))
        rows.append(("ablation (semantic off)", statistics.median(timed(reconstruct, i, ["semantic"]) for i in n)))
        rows.append(
            ("lesion (early visual)", statistics.median(timed(reconstruct, i, (), ["early_visual"]) for i in n))
        )
        rows.append(("first map (semantic, Saliency, fsLR-32k)", timed(show, 0)))
        rows.append(("map switch (decoder)", statistics.median(timed(show, i, "structure") for i in n)))
        rows.append(
            (
                "map switch (surface)",
                statistics.median(timed(show, i, "structure", "fsaverage5 (resampled preview)") for i in n),
            )
        )
        rows.append(
            (
                "IntegratedGradients map (flow)",
                statistics.median(
                    timed(show, i, "flow", "fsLR-32k inflated", "attribution: IntegratedGradients") for i in n
                ),
            )
        )
    finally:
        process.terminate()
        try:
            _, err = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
    print(f"app.py --bundle {args.bundle}; {os.cpu_count()} CPU cores; seconds as a client sees them\n")
    print("| step | seconds | target | met |\n|---|---|---|---|")
    for name, seconds in rows:
        target = TARGETS.get(name)
        met = "" if target is None else ("yes" if seconds <= target else "**no**")
        print(f"| {name} | {seconds:.2f} | {'' if target is None else f'<= {target:g}'} | {met} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
