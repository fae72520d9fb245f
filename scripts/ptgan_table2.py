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


def fusions(run: Path, data) -> list[dict]:
    """What the K generated views add, from the run's own FusionNet inputs of the test images: rank-1 / mAP / mINP of
    the input's F_R2 feature alone, the mean of the K generated views' features, the mean of all K + 1, FusionNet."""
    import torch.nn.functional as F
    model, dataset = load_trained(run), load_dataset(data)
    loaders = build_test_loaders(dataset, LoaderConfig(transform=info_of(model).test_transform(model.config)))
    ways = {"F_R2(x) alone": lambda t: t[:, 0], "mean of the K generated": lambda t: t[:, 1:].mean(1),
            "mean of x and the K generated": lambda t: t.mean(1),
            "FusionNet": lambda t: model.best_fusion.eval().features(t)}
    parts = []
    for loader in loaders:
        inputs, pids, cams = [], [], []
        for batch in loader:
            inputs.append(model.fusion_inputs(batch["image"])); pids.append(batch["pid"]); cams.append(batch["camid"])
        parts.append((torch.cat(inputs), torch.cat(pids).numpy(), torch.cat(cams).numpy()))
    (qi, qp, qc), (gi, gp, gc) = parts
    rows = []
    with torch.no_grad():
        for name, way in ways.items():
            qf, gf = F.normalize(way(qi), dim=1), F.normalize(way(gi), dim=1)
            s = evaluate_rank(retrieval_distances(qf, gf, "euclidean", False), qp, gp, qc, gc, max_rank=10)
            rows.append({"row": f"{run.name}: {name}", "rank1": float(s["cmc"][0]), "mAP": float(s["mAP"]), "mINP": float(s["mINP"])})
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--baseline", type=Path, required=True, help="F_R2: a quickstart-recipe baseline run of this seed")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rows", default="all", help="'all', 'full-body', 'per-joint', or row names separated by ';' "
                                                 "(e.g. 'full-body GMM-12'), run in the order given")
    p.add_argument("--skip-baseline", action="store_true", help="leave out the F_R2 row (another invocation has it)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--fusions", type=Path, nargs="*", default=[], help="runs to take apart (see `fusions`) instead")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    groups = {"all": list(ROWS), **{c: [r for r in ROWS if r.startswith(c)] for c in CRITERIA}}
    rows = [r for part in args.rows.split(";") for r in groups.get(part.strip(), [part.strip()])]
    unknown = [r for r in rows if r not in ROWS]
    if unknown: raise SystemExit(f"--rows: unknown row(s) {unknown}; known: {list(ROWS)}")
    emit = RowWriter(args.out, seed=args.seed)
    if args.fusions:
        for run in args.fusions:
            for row in fusions(run, args.data): emit(row)
        return
    done = set(pd.read_csv(args.out)["row"]) if args.out.is_file() else set()     # rows of an interrupted invocation
    if not args.skip_baseline and "F_R2 alone (baseline)" not in done:
        emit({"row": "F_R2 alone (baseline)", **scores(args.baseline, args.data),
              "train_s": float(pd.read_csv(args.baseline / "losses.csv")["seconds"].max())})
    generator = args.work / f"generator_{args.seed}"
    if (generator / "checkpoints" / "last.pt").is_file(): seconds = float(pd.read_csv(generator / "losses.csv")["seconds"].max())
    else: seconds = timed("ptgan", args.data, generator, seed=args.seed, preset="tiny",
                          config_overrides=dict(reid_run=str(args.baseline), fusion_epochs=0))
    if "generator (pose transfer)" not in done and not args.skip_baseline:
        dis = evaluate_disentanglement(load_trained(generator), args.data, num_pairs=64)
        emit({"row": "generator (pose transfer)", **{k: dis[k] for k in FIDELITY}, "train_s": seconds})
    for name in (r for r in rows if r not in done):
        run = args.work / f"{name.replace(' ', '_')}_{args.seed}"
        seconds = timed("ptgan", args.data, run, seed=args.seed, preset="tiny",
                        config_overrides=dict(generator_run=str(generator)) | ROWS[name])
        emit({"row": name, **scores(run, args.data), "train_s": seconds})


if __name__ == "__main__":
    main()
