"""SynthReID rendering speed on one core (target: >= 500 images/s at 128x64).

    python benchmarks/bench_synth.py [--n 2000] [--write]

Renders a fixed mix of identities, cameras, views, occluders and blur with `render` (single process, one thread,
pinned to one CPU when the OS allows), and reports images/s at 128x64 and 256x128, the JPEG encoding rate, and with
`--write` the wall time of `write_synthreid` for the default dataset.
"""
import argparse, os, tempfile, time
from pathlib import Path

import numpy as np
import reid_workbench  # noqa: F401  (before torch / torchvision)
import torch

from reid_workbench.data.synth import (SynthConfig, encode_jpeg, render, sample_cameras, sample_identity,
                                       sample_nuisance, write_synthreid)


def one_core():
    torch.set_num_threads(1)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})


def scenes(n, seed=0):
    rng = np.random.default_rng(seed)
    cams = sample_cameras(rng, 6)
    return [(sample_identity(rng), sample_nuisance(rng, cams[i % 6])) for i in range(n)]


def rate(fn, items, repeats=3):
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for it in items: fn(*it)
        best = min(best, time.perf_counter() - t)
    return len(items) / best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="images per measurement")
    ap.add_argument("--write", action="store_true", help="also time write_synthreid(SynthConfig())")
    args = ap.parse_args(argv)
    one_core()
    items = scenes(args.n)
    for size in ((128, 64), (256, 128)):
        for a, b in items[:20]: render(a, b, size)          # warm the per-camera background cache
        r = rate(lambda a, b: render(a, b, size), items)
        print(f"render {size[0]}x{size[1]}: {r:8.0f} images/s on one core" + ("  (target >= 500)" if size == (128, 64) else ""))
    imgs = [(render(a, b)[0],) for a, b in items[:500]]
    print(f"JPEG encode 128x64: {rate(encode_jpeg, imgs):8.0f} images/s")
    if args.write:
        cfg = SynthConfig()
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            _, summary = write_synthreid(Path(d) / "synthreid", cfg, progress=False)
            dt = time.perf_counter() - t
        n = summary["counts"]["images"]
        print(f"write_synthreid(SynthConfig()): {n} images in {dt:.2f} s ({n / dt:.0f} images/s incl. JPEG + files)")


if __name__ == "__main__":
    main()
