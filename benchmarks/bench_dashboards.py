"""Latency of a dashboard update (a widget change or a click, measured around it) with tiny models on the CPU.

Target (DESIGN.md): <= 150 ms per update of the swap / interpolation / part-shuffle dashboards with a tiny model on a
CPU. Prints the median and p90 of ~20 updates per dashboard and action, for StripeColourToy, a tiny DG-Net (and a
tiny IS-GAN when installed) trained for one step (the weights do not change the cost), and a tiny baseline for the
retrieval browser. The interpolation strip is computed in a background thread; its time is printed separately.

Updates run as the dashboards run them: one torch thread each (`interactive_threads`; $REID_WORKBENCH_DASHBOARD_THREADS
overrides it). `--notebook` leaves OMP_WAIT_POLICY unset, as a Jupyter kernel does (the app sets it to PASSIVE);
`--load N` keeps N other processes spinning on the CPU meanwhile, as on a busy machine.

Usage: python benchmarks/bench_dashboards.py [--threads 2] [--updates 20] [--methods dgnet,isgan,pt] [--notebook] [--load 1]
"""
import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import sys
if "--notebook" not in sys.argv: os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import multiprocessing  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from reid_workbench.codes import StripeColourToy  # noqa: E402
from reid_workbench.dashboards import (CodeBank, ImageBank, InterpolationDashboard, MonitorDashboard,  # noqa: E402
                                       PartShuffleDashboard, PoseTransferDashboard, RetrievalDashboard, SwapDashboard,
                                       input_size_of)
from reid_workbench.registry import available_methods, method_info  # noqa: E402
from reid_workbench.data.synth import SynthConfig, write_synthreid  # noqa: E402
from reid_workbench.runs import train_run  # noqa: E402
from reid_workbench.registry import info_of, load_trained  # noqa: E402

ROWS = []


def timed(label: str, model: str, actions, warmup: int = 1):
    "Run each action (a callable that changes a widget), timing it; record median / p90 after `warmup` runs."
    ms = []
    for k, act in enumerate(actions):
        start = time.perf_counter()
        act()
        if k >= warmup: ms.append((time.perf_counter() - start) * 1000)
    ROWS.append(dict(dashboard=label, model=model, n=len(ms), median_ms=statistics.median(ms),
                     p90_ms=float(np.percentile(ms, 90)), max_ms=max(ms)))
    return ms


def setter(widget, value):
    return lambda: setattr(widget, "value", value)


def bench_generative(name: str, model, root: Path, n: int):
    bank = ImageBank.from_dataset(root, input_size_of(model), info_of(model).normalization, max_images=64)
    start = time.perf_counter()
    codes = CodeBank(model, bank)
    print(f"{name}: encoded {len(bank)} bank images in {time.perf_counter() - start:.2f} s "
          f"({codes.num_parts} appearance parts, structure {codes.codes.structure_kind})")
    m = len(bank)

    swap = SwapDashboard(codes)
    acts = [setter(swap.structure_picker.index, (7 * k + 3) % m) if k % 2 else
            setter(swap.appearance_picker.index, (5 * k + 1) % m) for k in range(n + 1)]
    timed("swap: pick a donor", name, acts)
    swap.grid_rows.value = swap.grid_cols.value = 3
    swap.mode.value = "grid"
    timed("swap: 3x3 grid, pick a donor", name, [setter(swap.structure_picker.index, (3 * k + 2) % m)
                                                 for k in range(n // 2 + 1)])
    swap.mode.value = "single"

    interp = InterpolationDashboard(codes, background=True)
    interp.wait()
    ts = [round(0.05 * k, 2) for k in range(21)]
    acts = [setter(interp.t_appearance if k % 2 else interp.t_structure, ts[(3 * k + 1) % 21]) for k in range(n + 1)]
    timed("interpolation: move a slider", name, acts)
    interp.wait()
    # a new image pair: the sliders' image now, the strip (7 decodes + 7 embeds) in the background
    strip_before = len(interp.strip_ms)
    acts = []
    for k in range(n // 2 + 1):
        acts.append(setter(interp.b_picker.index, (11 * k + 5) % m))
    sync = []
    for k, act in enumerate(acts):
        start = time.perf_counter()
        act()
        if k: sync.append((time.perf_counter() - start) * 1000)
        interp.wait()
    ROWS.append(dict(dashboard="interpolation: pick image b (strip in background)", model=name, n=len(sync),
                     median_ms=statistics.median(sync), p90_ms=float(np.percentile(sync, 90)), max_ms=max(sync)))
    strip = interp.strip_ms[strip_before + 1:]
    ROWS.append(dict(dashboard="  ... the strip itself (background thread)", model=name, n=len(strip),
                     median_ms=statistics.median(strip), p90_ms=float(np.percentile(strip, 90)), max_ms=max(strip)))

    if codes.codes.structure_kind == "keypoints":
        pose = PoseTransferDashboard(codes, palette_data=root)
        pose.source.value = "pose palette"
        timed("pose transfer: pick a palette pose", name, [(lambda k=k: pose.palette_buttons[k % 8].click()) for k in range(n + 1)])
        pose.source.value = "from image"
        timed("pose transfer: pick a target image", name, [setter(pose.pose_picker.index, (5 * k + 3) % m) for k in range(n + 1)])
        pose.wait()
        assert pose.ok, pose.error_message
    if codes.num_parts < 2: return
    shuffle = PartShuffleDashboard(codes)
    p = len(shuffle.part_toggles)
    acts = [(lambda t=shuffle.part_toggles[k % p]: setattr(t, "value", not t.value)) for k in range(n + 1)]
    timed(f"part shuffle: toggle a part ({p} parts)", name, acts)
    timed("part shuffle: pick image b", name, [setter(shuffle.b_picker.index, (5 * k + 2) % m) for k in range(n + 1)])
    for d in (swap, interp, shuffle):
        assert d.ok, d.error_message


def bench_retrieval(name: str, model, root: Path, n: int):
    start = time.perf_counter()
    dash = RetrievalDashboard(model, root)
    print(f"{name}: retrieval features of {len(dash.session.q_pids)} queries and {len(dash.session.g_pids)} gallery images in "
          f"{time.perf_counter() - start:.2f} s")
    nq = len(dash.session.q_pids)
    timed("retrieval: pick a query", name, [setter(dash.query, (7 * k + 1) % nq) for k in range(n + 1)])
    timed("retrieval: toggle re-ranking", name, [setter(dash.rerank, k % 2 == 0) for k in range(1, n + 2)], warmup=3)
    timed("retrieval: click a row of the query table", name,
          [(lambda k=k: dash.row_buttons[k % len(dash.row_buttons)].click()) for k in range(n + 1)])
    timed("retrieval: sort by AP", name,
          [setter(dash.sort_by, ("ap_asc", "ap_desc", "index")[k % 3]) for k in range(n + 1)])
    assert dash.ok, dash.error_message


def bench_monitor(work: Path, n: int, rows: int = 1000):
    "A run folder whose losses.csv grows by a row before each refresh (2 stages, 8 losses, `rows` rows)."
    run = work / "monitor_run"
    run.mkdir()
    rng = np.random.default_rng(0)
    log = pd.DataFrame({"stage": ["warmup"] * (rows // 2) + ["joint"] * (rows - rows // 2), "epoch": 0,
                        "step": np.arange(1, rows + 1)} | {f"loss{k}": rng.random(rows) for k in range(8)})
    log.to_csv(run / "losses.csv", index=False)
    mon = MonitorDashboard(run)
    ms = []
    for k in range(n + 1):
        extra = log.tail(1).copy()
        extra["step"] += 1
        log = pd.concat([log, extra])
        log.to_csv(run / "losses.csv", index=False)   # the trainer's write is not part of the update
        start = time.perf_counter()
        assert mon.refresh()
        if k: ms.append((time.perf_counter() - start) * 1000)
    ROWS.append(dict(dashboard=f"monitor: refresh after a new log row ({rows}+ rows, 8 losses)", model="any run",
                     n=len(ms), median_ms=statistics.median(ms), p90_ms=float(np.percentile(ms, 90)), max_ms=max(ms)))
    assert mon.ok, mon.error_message


def _spin():
    while True: pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--updates", type=int, default=20)
    ap.add_argument("--methods", default="dgnet,isgan,pt", help="generative methods to train for one step and time")
    ap.add_argument("--notebook", action="store_true", help="leave OMP_WAIT_POLICY unset, as a Jupyter kernel does")
    ap.add_argument("--load", type=int, default=0, help="processes kept spinning on the CPU meanwhile")
    args = ap.parse_args()
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.load)]
    for p in spinners: p.start()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench_dashboards_"))
    root, _ = write_synthreid(work / "synth", SynthConfig.tiny(ids=16), progress=False)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads outside updates, updates with "
          f"{os.environ.get('REID_WORKBENCH_DASHBOARD_THREADS') or 1}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
          f"{args.load} spinning process(es), SynthReID tiny (16 ids) in {work}")
    bench_generative("StripeColourToy", StripeColourToy(), root, args.updates)
    for method in [m for m in args.methods.split(",") if m]:
        if method not in available_methods():
            print(f"{method}: not installed, skipped")
            continue
        run = work / method
        epochs = {} if method in ("fdgan", "pt", "ptgan") else dict(epochs=1)   # these train in stages: their smoke settings
        overrides = None if epochs else method_info(method).smoke | (dict(guider="none", epochs_reid=0) if method == "pt" else {})
        train_run(method, root, run, device="cpu", progress=False, config_overrides=overrides, **epochs,
                  trainer_overrides=dict(max_steps_per_epoch=1, log_every=1))
        model = load_trained(run)
        bench_generative(method, model, root, args.updates)
        bench_retrieval(method, model, root, args.updates)
    run = work / "baseline"
    train_run("baseline", root, run, epochs=1, device="cpu", progress=False)
    bench_retrieval("baseline", load_trained(run), root, args.updates)
    bench_monitor(work, args.updates)
    table = pd.DataFrame(ROWS)
    pd.set_option("display.width", 200)
    print()
    print(table.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    gen = table[table.dashboard.str.match(r"(swap: pick|interpolation: move|interpolation: pick|part shuffle)")]
    worst = gen.p90_ms.max()
    print(f"\nswap / interpolation / part-shuffle updates: worst p90 {worst:.1f} ms "
          f"({'within' if worst <= 150 else 'OVER'} the 150 ms target)")


if __name__ == "__main__":
    main()
