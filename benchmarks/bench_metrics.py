"""Benchmark of reid_workbench.metrics at Market-1501 size (3368 queries x 15913 gallery images).

1. `evaluate_rank` vs a Torchreid-style evaluator (`metrics._evaluate_rank_reference`: full `np.argsort` of the
   distance matrix with numpy's default quicksort as Torchreid, then a Python loop over queries) on random float32 distances, ~750 ids + distractors, 6 cameras.
2. `re_ranking` vs `_re_ranking_reference` (dense N x N matrices and loops) on clustered synthetic features.

Each measured call runs in its own fresh subprocess, so the peak RSS printed for it (resource.getrusage) is that
call's process: Python + libraries + its inputs (loaded from .npy for re-ranking) plus whatever the call allocates.
Usage:

    python benchmarks/bench_metrics.py                 # everything at Market size
    python benchmarks/bench_metrics.py --scale 0.25    # everything at a quarter of the size
    python benchmarks/bench_metrics.py --rerank-scales 1 0.25 --skip-eval
"""
from __future__ import annotations
import argparse, json, os, resource, subprocess, sys, tempfile, time
import numpy as np

N_QUERY, N_GALLERY, N_IDS, N_DISTRACTORS, N_CAMS = 3368, 15913, 750, 2798, 6


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux


# ------------------------------------------------------------------------------------------------ evaluation

def eval_problem(scale: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    nq, ng, nd = int(N_QUERY * scale), int(N_GALLERY * scale), int(N_DISTRACTORS * scale)
    n_ids = max(2, int(N_IDS * scale))
    q_pids = rng.integers(1, n_ids + 1, nq)
    g_pids = np.concatenate([rng.integers(1, n_ids + 1, ng - nd), np.zeros(nd, np.int64)])
    rng.shuffle(g_pids)
    q_cams, g_cams = rng.integers(0, N_CAMS, nq), rng.integers(0, N_CAMS, ng)
    dist = rng.random((nq, ng), dtype=np.float32)
    return dist, q_pids, g_pids, q_cams, g_cams


def part_eval(scale: float, repeats: int = 3) -> dict:
    from reid_workbench.metrics import evaluate_rank, _evaluate_rank_reference as torchreid_style_evaluate
    args = eval_problem(scale)
    rss_inputs = peak_rss_gib()
    evaluate_rank(*[a[:50] if i in (0, 1, 3) else a for i, a in enumerate(args)])  # warm-up (imports, threads)
    times, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        ours = evaluate_rank(*args)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    rss_ours = peak_rss_gib()
    t, c = time.perf_counter(), time.process_time()
    cmc, mAP, mINP, n_valid = torchreid_style_evaluate(*args, kind="quicksort")
    t_ref, cpu_ref = time.perf_counter() - t, time.process_time() - c
    # exactness against the same evaluator with the documented tie order (stable sort), on the first 500 queries
    sub = [a[:500] if i in (0, 1, 3) else a for i, a in enumerate(args)]
    s_cmc, s_mAP, s_mINP, _ = torchreid_style_evaluate(*sub, kind="stable")
    s_ours = evaluate_rank(*sub)
    return dict(shape=list(args[0].shape), ours_s=min(times), ours_all_s=times, torchreid_style_s=t_ref,
                ours_cpu_s=cpu[int(np.argmin(times))], torchreid_style_cpu_s=cpu_ref,
                speedup=t_ref / min(times), rss_inputs_gib=rss_inputs, rss_after_ours_gib=rss_ours,
                rss_total_gib=peak_rss_gib(), num_valid=[ours["num_valid_queries"], n_valid],
                diff_vs_quicksort_ref=dict(mAP=abs(ours["mAP"] - mAP), mINP=abs(ours["mINP"] - mINP),
                                           cmc=float(np.abs(ours["cmc"] - cmc).max())),
                diff_vs_stable_ref_500q=dict(mAP=abs(s_ours["mAP"] - s_mAP), mINP=abs(s_ours["mINP"] - s_mINP),
                                             cmc=float(np.abs(s_ours["cmc"] - s_cmc).max())),
                mAP=ours["mAP"], mINP=ours["mINP"], rank1=float(ours["cmc"][0]))


# ------------------------------------------------------------------------------------------------ re-ranking

def rerank_problem(scale: float, seed: int = 0, dim: int = 64):
    "Clustered features: ~750 identities (queries and gallery images around one centre each) plus distractors."
    import torch
    from reid_workbench.metrics import compute_distance_matrix
    g = torch.Generator().manual_seed(seed)
    nq, ng, nd = int(N_QUERY * scale), int(N_GALLERY * scale), int(N_DISTRACTORS * scale)
    n_ids = max(2, int(N_IDS * scale))
    centers = torch.randn(n_ids, dim, generator=g)
    q_ids = torch.randint(0, n_ids, (nq,), generator=g)
    g_ids = torch.randint(0, n_ids, (ng - nd,), generator=g)
    qf = centers[q_ids] + 0.45 * torch.randn(nq, dim, generator=g)
    gf = torch.cat([centers[g_ids] + 0.45 * torch.randn(ng - nd, dim, generator=g),
                    1.2 * torch.randn(nd, dim, generator=g)])
    qf, gf = torch.nn.functional.normalize(qf, dim=1), torch.nn.functional.normalize(gf, dim=1)
    return [compute_distance_matrix(a, b).numpy() for a, b in ((qf, gf), (qf, qf), (gf, gf))]


def part_rerank_inputs(scale: float, folder: str) -> dict:
    for name, x in zip(("q_g", "q_q", "g_g"), rerank_problem(scale)):
        np.save(os.path.join(folder, f"{name}.npy"), x)
    return {}


def part_rerank(folder: str, which: str) -> dict:
    from reid_workbench.metrics import re_ranking, _re_ranking_reference
    inputs = [np.load(os.path.join(folder, f"{name}.npy")) for name in ("q_g", "q_q", "g_g")]
    rss_inputs = peak_rss_gib()  # the process with its inputs loaded, before the call
    fn = re_ranking if which == "fast" else _re_ranking_reference
    t, c = time.perf_counter(), time.process_time()
    result = fn(*inputs)
    elapsed, cpu = time.perf_counter() - t, time.process_time() - c
    np.save(os.path.join(folder, f"{which}.npy"), result)
    return dict(which=which, n_query=inputs[0].shape[0], n_gallery=inputs[0].shape[1], seconds=elapsed, cpu_seconds=cpu,
                rss_inputs_gib=rss_inputs, peak_rss_gib=peak_rss_gib())


# ------------------------------------------------------------------------------------------------ driver

def run_child(*args: str, timeout: float | None = None) -> dict | None:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"  ! {' '.join(args)}: stopped after {timeout:.0f} s")
        return None
    if proc.returncode != 0:
        print(f"  ! {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="size relative to Market-1501 for the evaluation part")
    ap.add_argument("--rerank-scales", type=float, nargs="*", default=None,
                    help="sizes relative to Market-1501 for the re-ranking part (default: --scale)")
    ap.add_argument("--skip-eval", action="store_true")
    ap.add_argument("--skip-rerank", action="store_true")
    ap.add_argument("--reference-timeout", type=float, default=1800, help="seconds allowed to the reference re-ranking")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        kind = a.child[0]
        res = (part_eval(float(a.child[1])) if kind == "eval" else
               part_rerank_inputs(float(a.child[1]), a.child[2]) if kind == "rerank-inputs" else
               part_rerank(a.child[1], a.child[2]))
        print(json.dumps(res))
        return

    import torch
    print(f"torch {torch.__version__}, numpy {np.__version__}, {os.cpu_count()} CPUs, "
          f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} at start")
    if not a.skip_eval:
        print(f"\n== evaluate_rank vs Torchreid-style evaluator (scale {a.scale}) ==")
        r = run_child("eval", str(a.scale))
        if r:
            print(f"  distmat {r['shape'][0]} x {r['shape'][1]} float32, {r['num_valid'][0]} valid queries")
            print(f"  ours: {r['ours_s']:.3f} s (runs: {', '.join(f'{x:.3f}' for x in r['ours_all_s'])}; "
                  f"CPU time {r['ours_cpu_s']:.3f} s)")
            print(f"  Torchreid-style: {r['torchreid_style_s']:.2f} s (CPU time {r['torchreid_style_cpu_s']:.2f} s)"
                  f"   -> speed ratio {r['speedup']:.1f}x (CPU time ratio "
                  f"{r['torchreid_style_cpu_s'] / r['ours_cpu_s']:.1f}x)")
            print(f"  rank1 {r['rank1']:.4f}  mAP {r['mAP']:.6f}  mINP {r['mINP']:.6f}")
            print(f"  |ours - Torchreid-style (quicksort ties)|: {r['diff_vs_quicksort_ref']}")
            print(f"  |ours - same evaluator, stable sort, 500 queries|: {r['diff_vs_stable_ref_500q']}")
            print(f"  peak RSS: inputs {r['rss_inputs_gib']:.2f} GiB, after ours {r['rss_after_ours_gib']:.2f} GiB, "
                  f"after Torchreid-style {r['rss_total_gib']:.2f} GiB")
    if not a.skip_rerank:
        for scale in a.rerank_scales or [a.scale]:
            print(f"\n== re_ranking vs straightforward reference (scale {scale}) ==")
            with tempfile.TemporaryDirectory() as tmp:
                run_child("rerank-inputs", str(scale), tmp)
                fast = run_child("rerank", tmp, "fast")
                ref = run_child("rerank", tmp, "reference", timeout=a.reference_timeout)
                for r in (fast, ref):
                    if r:
                        print(f"  {r['which']:9s}: {r['seconds']:8.2f} s (CPU {r['cpu_seconds']:7.2f} s)   peak RSS {r['peak_rss_gib']:.2f} GiB "
                              f"(inputs {r['rss_inputs_gib']:.2f} GiB)   [{r['n_query']} q x {r['n_gallery']} g]")
                if fast and ref:
                    diff = np.abs(np.load(os.path.join(tmp, "fast.npy")) - np.load(os.path.join(tmp, "reference.npy"))).max()
                    print(f"  speed ratio {ref['seconds'] / fast['seconds']:.1f}x, max |fast - reference| = {diff:.2e}")


if __name__ == "__main__":
    main()
