"""Table II of pt-GAN re-run on SynthReID (tiny preset): {full-body, per-joint} x {k-means, GMM} x K in {8, 12, 16, 24},
rank-1 / mAP / mINP with and without k-reciprocal re-ranking, F_R2 alone (the baseline run) beside them.

One generator run per seed (F_R2 = `--baseline`, fusion off) is trained and measured for pose-transfer fidelity; each
row is then a pt-GAN run with `generator_run` = that run: the row's pose clustering, the FusionNet inputs of the
training split and FusionNet. Test features are extracted once per row (K generated images per query and gallery
image; no flip averaging, for every row) and scored with and without re-ranking; the cost of the extraction is
in the row."""
import argparse, logging
from pathlib import Path

import pandas as pd
import torch

from reid_workbench.codes_metrics import evaluate_disentanglement
from reid_workbench.data.datasets import load_dataset
from reid_workbench.data.loaders import LoaderConfig, build_test_loaders
from reid_workbench.metrics import evaluate_rank, extract_features, retrieval_distances
from reid_workbench.registry import info_of, load_trained
from results_table import RowWriter, timed

CRITERIA = {"full-body": "full", "per-joint": "per_joint"}
METHODS = {"k-means": "kmeans", "GMM": "gmm"}
KS = (8, 12, 16, 24)
ROWS = {f"{c} {m}-{k}": dict(cluster_mode=CRITERIA[c], cluster_method=METHODS[m], num_poses=k)
        for c in CRITERIA for m in METHODS for k in KS}
FIDELITY = ("recon_ssim", "swap_l1", "swap_l1_ref_a", "swap_l1_ref_b", "swap_l1_person", "swap_l1_person_ref_a",
            "swap_l1_person_ref_b", "swap_ssim_person", "swap_beats_both", "swap_beats_both_person", "appearance_effect")


def scores(run: Path, data) -> dict:
    "rank-1 / mAP / mINP of the run's test feature without and with re-ranking (features extracted once), its cost."
    model, dataset = load_trained(run), load_dataset(data)
    loaders = build_test_loaders(dataset, LoaderConfig(transform=info_of(model).test_transform(model.config)))
    (qf, qp, qc), (gf, gp, gc) = (extract_features(model.embed, loader, flip=False) for loader in loaders)
    out = {}
    for rerank in (False, True):
        s = evaluate_rank(retrieval_distances(qf, gf, "euclidean", rerank), qp, gp, qc, gc, max_rank=10)
        tag = "_rerank" if rerank else ""
        out |= {f"rank1{tag}": float(s["cmc"][0]), f"mAP{tag}": float(s["mAP"]), f"mINP{tag}": float(s["mINP"])}
    cost = getattr(model, "feature_cost", None)
    if cost and cost["images"]:
        out |= {"test_images": cost["images"], "generated": cost["generated"], "feature_ms_per_image": 1000 * cost["seconds"] / cost["images"]}
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--baseline", type=Path, required=True, help="F_R2: a quickstart-recipe baseline run of this seed")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rows", default="all", help="'all', or row names separated by ';' (e.g. 'full-body GMM-12')")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = list(ROWS) if args.rows == "all" else [r.strip() for r in args.rows.split(";")]
    unknown = [r for r in rows if r not in ROWS]
    if unknown: raise SystemExit(f"--rows: unknown row(s) {unknown}; known: {list(ROWS)}")
    emit = RowWriter(args.out, seed=args.seed)
    emit({"row": "F_R2 alone (baseline)", **scores(args.baseline, args.data),
          "train_s": float(pd.read_csv(args.baseline / "losses.csv")["seconds"].max())})
    generator = args.work / f"generator_{args.seed}"
    if (generator / "checkpoints" / "last.pt").is_file(): seconds = float(pd.read_csv(generator / "losses.csv")["seconds"].max())
    else: seconds = timed("ptgan", args.data, generator, seed=args.seed, preset="tiny",
                          config_overrides=dict(reid_run=str(args.baseline), fusion_epochs=0))
    dis = evaluate_disentanglement(load_trained(generator), args.data, num_pairs=64)
    emit({"row": "generator (pose transfer)", **{k: dis[k] for k in FIDELITY}, "train_s": seconds})
    for name in rows:
        run = args.work / f"{name.replace(' ', '_')}_{args.seed}"
        seconds = timed("ptgan", args.data, run, seed=args.seed, preset="tiny",
                        config_overrides=dict(generator_run=str(generator)) | ROWS[name])
        emit({"row": name, **scores(run, args.data), "train_s": seconds})


if __name__ == "__main__":
    main()
