"""Indexing a dataset at OCT2017's scale: time and memory of ``octlens.data.scan`` on 84k files.

    .venv/bin/python benchmarks/index_scale.py [--n-per-class 21000] [--data /tmp/octlens-84k]

Synthesizes (once; the folder is reused) ``4 x n_per_class`` small scans (62 x 64 px: the
index's work is per file, so small files measure it without 50 minutes of synthesis), then
times :func:`~octlens.data.scan` in a fresh process-like state: listing, patient parsing, the
header check of every file (Pillow opens it, PNG CRCs, a JPEG's end-of-image marker), splits,
and leakage bookkeeping. Memory is the Python heap the index holds (tracemalloc), after and at
its peak. Goal (issue 13): 84k files in under a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from pathlib import Path

from octlens.data.index import scan
from octlens.data.synth import read_record, synthesize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-per-class", type=int, default=21000)
    parser.add_argument("--data", type=Path, default=Path("/tmp/octlens-84k"))
    args = parser.parse_args()
    if read_record(args.data) is None:
        start = time.perf_counter()
        synthesize(args.data, args.n_per_class, seed=0, size=(62, 64))
        print(f"synthesized {4 * args.n_per_class} scans in {time.perf_counter() - start:.0f} s")
    tracemalloc.start()
    start = time.perf_counter()
    index = scan(args.data)
    seconds = time.perf_counter() - start
    held, peak = tracemalloc.get_traced_memory()
    files = sum(len(samples) for samples in index.splits.values())
    print(
        f"indexed {files} scans ({', '.join(f'{k} {len(v)}' for k, v in index.splits.items())}) "
        f"in {seconds:.1f} s ({files / seconds:.0f} files/s; goal: 84k in < 60 s); index "
        f"memory {held / 2**20:.1f} MiB held, {peak / 2**20:.1f} MiB peak "
        f"({held / files:.0f} bytes per scan)"
    )


if __name__ == "__main__":
    main()
