"""Metric-vs-minutes curves of a generative method: train its tiny preset in chunks of epochs (each chunk resumes the
run), and after each chunk measure re-ID (rank-1, mAP), reconstruction, swap fidelity (whole image and person region, beside the trivial
references "return a" / "return b") and the appearance effect on SynthReID. Prints one row per chunk and writes them
to <out>/curve.csv.

Usage: python benchmarks/generator_curves.py --method dgnet --data DIR --epochs 2,4,8,12 [--threads 1]
                                             [--set key=value ...] [--out DIR] [--pairs 48]
The learning-rate schedule of the preset is switched off (milestones=[]) unless --set milestones=... is given, so
that every point of the curve is a run of that length without a decay. Training minutes count training only.
"""
import argparse, json, logging, tempfile, time
from pathlib import Path

import pandas as pd
import torch

from reid_workbench.codes_metrics import evaluate_disentanglement
from reid_workbench.registry import load_trained
from reid_workbench.runs import evaluate_run, train_run

COLUMNS = ["recon_ssim", "swap_l1", "swap_l1_ref_a", "swap_l1_ref_b", "swap_ssim", "swap_ssim_ref_a", "swap_ssim_ref_b",
           "swap_l1_person", "swap_l1_person_ref_a", "swap_l1_person_ref_b", "swap_ssim_person",
           "swap_ssim_person_ref_a", "swap_ssim_person_ref_b", "swap_beats_both", "swap_beats_both_person",
           "appearance_effect", "appearance_effect_truth", "appearance_gain"]


def curve_png(table: pd.DataFrame, path, title: str) -> Path:
    """Four panels against training minutes (one line per `variant` when the table has that column): reconstruction
    SSIM, whole-image and person L1 beside both references, the appearance effect and gain."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.2), dpi=100)
    groups = list(table.groupby("variant", sort=False)) if "variant" in table else [("", table)]
    for k, (variant, t) in enumerate(groups):
        style, label = ("o-", "o--")[k % 2], f" {variant}" if variant else ""
        axes[0].plot(t["train_min"], t["recon_ssim"], style, label=label.strip() or None)
        for ax, region in ((axes[1], ""), (axes[2], "_person")): ax.plot(t["train_min"], t[f"swap_l1{region}"], style, label=f"swap{label}")
        axes[3].plot(t["train_min"], t["appearance_effect"], style, label=f"effect{label}")
        axes[3].plot(t["train_min"], t["appearance_gain"], style, label=f"gain{label}")
    for ax, region in ((axes[1], ""), (axes[2], "_person")):
        ax.axhline(table[f"swap_l1{region}_ref_a"].iloc[0], ls=":", c="tab:red", label='"return a"')
        ax.axhline(table[f"swap_l1{region}_ref_b"].iloc[0], ls=":", c="tab:green", label='"return b"')
    axes[0].axhline(0.75, ls=":", c="gray"); axes[3].axhline(0.05, ls=":", c="gray")
    for ax, name in zip(axes, ("recon SSIM (goal 0.75)", "swap L1, whole image", "swap L1, person", "appearance effect / gain")):
        ax.set_title(name, fontsize=9); ax.set_xlabel("training minutes"); ax.grid(alpha=0.3); ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=10); fig.tight_layout()
    fig.savefig(path); plt.close(fig)
    return Path(path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", default="dgnet")
    ap.add_argument("--data", required=True, help="a SynthReID folder (reid-workbench synth)")
    ap.add_argument("--epochs", default="2,4,8", help="cumulative epochs after which to measure")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pairs", type=int, default=48)
    ap.add_argument("--out", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", nargs="*", default=[], help="config overrides key=value (JSON values)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    out = Path(args.out or tempfile.mkdtemp(prefix=f"{args.method}_curve_"))
    overrides = {"milestones": []} | {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    print(f"{args.method} tiny, {args.threads} thread(s), overrides {overrides}, run in {out / 'run'}")
    rows, minutes = [], 0.0
    for epochs in (int(e) for e in args.epochs.split(",")):
        start = time.perf_counter()
        log = train_run(args.method, args.data, out / "run", preset="tiny", epochs=epochs, config_overrides=overrides,
                        progress=False, verify_images=False, accept_changes=True, seed=args.seed)
        minutes += (time.perf_counter() - start) / 60
        reid = evaluate_run(out / "run", args.data, device="cpu")
        scores = evaluate_disentanglement(load_trained(out / "run", "cpu"), args.data, num_pairs=args.pairs,
                                          diversity_ids=8, figure=out / f"swaps_{epochs}.png")
        rows.append({"epochs": epochs, "steps": int(log["step"].max()) + 1, "train_min": round(minutes, 2),
                     "rank1": reid["rank1"], "mAP": reid["mAP"]}
                    | {k: scores[k] for k in COLUMNS})
        table = pd.DataFrame(rows)
        table.to_csv(out / "curve.csv", index=False)
        print(table.tail(1).T.to_string(header=False, float_format=lambda v: f"{v:.3f}"), flush=True)
    curve_png(table, out / "curve.png", f"{args.method} tiny on SynthReID, {args.threads} thread(s)")
    print(f"curve: {out / 'curve.csv'}, {out / 'curve.png'}")


if __name__ == "__main__":
    main()
