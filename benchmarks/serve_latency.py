"""The web app's latency and throughput against the bare explainers on the same scans.

    .venv/bin/python benchmarks/serve_latency.py [--runs runs/demo/resnet18 runs/demo/vit_tiny]

Four measurements, in this process, on the test scans of the runs' data:

1. **bare, one scan**: decode the file, run each model and each of its methods on it, as a script
   calling the library would (median of ``--scans`` scans);
2. **app, one request**: ``POST /api/predict`` with one scan to a server on a loopback port, one
   request at a time (the same scans): what a user waits for, HTTP, decoding, retina finding and
   region shares included;
3. **bare, batched**: the same work on batches of 16 scans: the best a script can do (scans/s);
4. **app under load**: ``--concurrent`` uploads at once (scans/s, latency percentiles), the
   server's micro-batcher collecting them.

Bare and app measurements alternate (scan by scan, round by round) and each figure is the
median over ``--rounds``. Goals (issue 12): the app's single-request median within 1.3x of the
bare one, and its throughput under load at least 0.8x the bare batched throughput. Peak memory
(max RSS) is printed after the load, to show it stays bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import time
from pathlib import Path

import httpx
import torch

from octlens.app import background_server, build_app
from octlens.app.server import example_scans
from octlens.app.service import ScanService
from octlens.data.images import load_grayscale
from octlens.training.run import Run


def bare(service: ScanService, paths: list[Path]) -> None:
    """Decode ``paths`` and run every model and method on them as one batch."""
    for loaded in service.runs:
        size = loaded.run.img_size
        transform = loaded.run.eval_transform()
        images = torch.stack([transform(load_grayscale(path, size)) for path in paths])
        with torch.no_grad():
            torch.softmax(loaded.model(images), dim=1)
        for explainer in loaded.explainers.values():
            explainer(images)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def load(url: str, paths: list[Path], concurrent: int) -> tuple[float, list[float]]:
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:

        async def one(path: Path) -> float:
            start = time.perf_counter()
            files = [("files", (path.name, path.read_bytes(), "image/jpeg"))]
            response = await http.post("/api/predict", files=files)
            response.raise_for_status()
            return time.perf_counter() - start

        start = time.perf_counter()
        latencies = await asyncio.gather(*(one(paths[n % len(paths)]) for n in range(concurrent)))
        return time.perf_counter() - start, list(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs",
        nargs="+",
        type=Path,
        default=[Path("runs/demo/resnet18"), Path("runs/demo/vit_tiny")],
    )
    parser.add_argument("--scans", type=int, default=16)
    parser.add_argument("--concurrent", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    data = Path(str(Run.load(args.runs[0]).checkpoint.meta["config"]["data"]))
    paths = example_scans(data, per_class=args.scans)[: args.scans]
    app = build_app(args.runs)
    service: ScanService = app.state.service
    bare(service, paths[:2])  # warm-up

    # Bare and app alternate, scan by scan and round by round, so a slow spell of the machine
    # falls on both; each figure is the median over --rounds.
    single, requests, bare_rates, app_rates, latencies = [], [], [], [], []
    with background_server(app) as url, httpx.Client(base_url=url, timeout=600) as http:
        for _ in range(args.rounds):
            for path in paths:
                start = time.perf_counter()
                bare(service, [path])
                single.append(time.perf_counter() - start)
                files = [("files", (path.name, path.read_bytes(), "image/jpeg"))]
                start = time.perf_counter()
                http.post("/api/predict", files=files).raise_for_status()
                requests.append(time.perf_counter() - start)
            start = time.perf_counter()
            for first in range(0, len(paths), 16):
                bare(service, paths[first : first + 16])
            bare_rates.append(len(paths) / (time.perf_counter() - start))
            seconds, answered = asyncio.run(load(url, paths, args.concurrent))
            app_rates.append(args.concurrent / seconds)
            latencies += answered
    bare_rate, app_rate = statistics.median(bare_rates), statistics.median(app_rates)
    batches = app.state.batcher.batch_sizes
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    runs = ", ".join(f"{r.name} ({', '.join(r.explainers)})" for r in service.runs)
    print(
        f"runs: {runs}; {len(paths)} scans, {args.rounds} rounds; "
        f"torch threads {torch.get_num_threads()}"
    )
    bare_p50, app_p50 = statistics.median(single), statistics.median(requests)
    print(f"one scan    bare p50 {bare_p50 * 1000:7.0f} ms | app p50 {app_p50 * 1000:7.0f} ms "
          f"| ratio {app_p50 / bare_p50:.2f} (goal <= 1.3)")  # fmt: skip
    print(f"throughput  bare batched {bare_rate:6.1f} scans/s | app, {args.concurrent} at once "
          f"{app_rate:6.1f} scans/s | ratio {app_rate / bare_rate:.2f} (goal >= 0.8)")  # fmt: skip
    print(f"under load  latency p50 {percentile(latencies, 0.5):.2f} s, p95 "
          f"{percentile(latencies, 0.95):.2f} s, max {max(latencies):.2f} s; largest batch "
          f"{max(batches)} scans; peak memory {peak_mb:.0f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
