"""Peak memory of ``octlens explain`` on many scans: streamed in batches against one batch.

    .venv/bin/python benchmarks/explain_memory.py [--scans 256] [--img-size 128] [--batch-size 32]

Makes ``--scans`` synthetic scans and a one-epoch ResNet18 run at ``--img-size``, then explains
all scans with Grad-CAM twice, each in a fresh process: with ``--batch-size`` and with one batch
of every scan (what ``octlens explain`` did before it streamed: every scan decoded, stacked and
explained at once). Peak memory is the process's resident high-water mark while explaining minus
the mark once the model was loaded; the ratio is one batch over streamed. Times are wall-clock
seconds of the explaining alone.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def measure(run: str, scans: list[str], out: str, batch_size: int) -> dict:
    """One measurement, meant to run alone in its process."""
    from octlens.report import explain_images
    from octlens.training.run import Run

    loaded = Run.load(run)
    loaded.model()
    before = _peak_mb()
    started = time.perf_counter()
    result = explain_images(loaded, scans, ["gradcam"], out, batch_size=batch_size, verbose=False)
    return {
        "batch_size": batch_size,
        "scans": len(result.scans),
        "peak_mb": _peak_mb() - before,
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scans", type=int, default=256)
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--measure", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        run, listing, out, batch_size = args.measure
        scans = Path(listing).read_text().splitlines()
        print(json.dumps(measure(run, scans, out, int(batch_size))))
        return

    from octlens.data.synth import synthesize
    from octlens.training import TrainConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        synthesize(root / "data", n_per_class=max(3, args.scans // 4), size=(248, 256), seed=0)
        scans = sorted(str(path) for path in (root / "data").glob("[tv]*/*/*.jpeg"))
        listing = root / "scans.txt"
        listing.write_text("\n".join(scans[: args.scans]))
        config = TrainConfig(
            data=root / "data", out=root / "run", img_size=args.img_size, epochs=1, batch_size=16
        )
        train(config, verbose=False)
        rows = []
        for batch_size in (args.batch_size, args.scans):
            command = [sys.executable, __file__, "--measure", str(root / "run"), str(listing)]
            command += [str(root / f"out{batch_size}"), str(batch_size)]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    streamed, whole = rows
    print(f"{args.scans} scans, ResNet18 at {args.img_size} px, Grad-CAM, CPU")
    print("| batch | peak memory (MB) | seconds |")
    print("| --- | --- | --- |")
    for row in rows:
        print(f"| {row['batch_size']} | {row['peak_mb']:.0f} | {row['seconds']:.1f} |")
    print(f"one batch / streamed peak memory: {whole['peak_mb'] / streamed['peak_mb']:.1f}x")


if __name__ == "__main__":
    main()
