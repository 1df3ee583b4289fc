"""Peak memory of ``octlens explain`` on many scans: streamed in batches against one batch.

    .venv/bin/python benchmarks/explain_memory.py [--scans 128 512] [--img-size 128]
        [--batch-size 32]

Makes synthetic scans and a one-epoch ResNet18 run at ``--img-size``, then, for each count in
``--scans``, explains that many scans with Grad-CAM twice, each in a fresh process: with
``--batch-size`` and in one batch of every scan (what ``octlens explain`` did before it streamed:
every scan decoded, stacked and explained at once). Peak memory is the growth of the process's
resident high-water mark (Linux ``VmHWM``, reset once the model is loaded) while explaining:
streamed, it should not grow with the number of scans. Times are wall-clock seconds of the
explaining alone (on a shared CPU, indicative only).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _status_mb(field: str) -> float:
    """A memory field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def measure(run: str, scans: list[str], out: str, batch_size: int) -> dict:
    """One measurement, meant to run alone in its process."""
    from octlens.explain.runner import explain_images
    from octlens.training.run import Run

    loaded = Run.load(run)
    loaded.model()
    Path("/proc/self/clear_refs").write_text("5")  # the high-water mark restarts from here
    before = _status_mb("VmRSS")
    started = time.perf_counter()
    result = explain_images(loaded, scans, ["gradcam"], out, batch_size=batch_size, verbose=False)
    return {
        "batch_size": batch_size,
        "scans": len(result.scans),
        "peak_mb": _status_mb("VmHWM") - before,
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scans", type=int, nargs="+", default=[128, 512])
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

    most = max(args.scans)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        synthesize(root / "data", n_per_class=max(3, most // 4 + 1), size=(248, 256), seed=0)
        scans = sorted(str(path) for path in (root / "data").glob("*/*/*.jpeg"))
        config = TrainConfig(
            data=root / "data", out=root / "run", img_size=args.img_size, epochs=1, batch_size=16
        )
        train(config, verbose=False)
        rows = []
        for count in args.scans:
            listing = root / f"scans{count}.txt"
            listing.write_text("\n".join(scans[:count]))
            for batch_size in (args.batch_size, count):
                out = root / f"out{count}-{batch_size}"
                command = [sys.executable, __file__, "--measure", str(root / "run"), str(listing)]
                done = subprocess.run(
                    [*command, str(out), str(batch_size)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"ResNet18 at {args.img_size} px, Grad-CAM, CPU")
    print("| scans | batch | peak memory growth (MB) | seconds |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['scans']} | {row['batch_size']} | {row['peak_mb']:.0f} | "
            f"{row['seconds']:.1f} |"
        )


if __name__ == "__main__":
    main()
