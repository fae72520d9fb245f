"""Pose-Transferrable ReID's Tables 1 and 4 and the N / epsilon sweeps of Section 4.5, re-run on SynthReID with the tiny
preset; the numbers of the PT notebook.

For one dataset and seed: a baseline run with the quickstart's recipe (the guider, and the table's "baseline" row;
`--baseline` reuses one), then one generator run per guider kind ("none", "ce": stages guider and generator only,
measured for pose-transfer fidelity against SynthReID's ground truth), then each asked row copies its generator run
and resumes it through the re-ID stage with its own N / epsilon. Rows go to --out's .jsonl as they finish and --out
(CSV) is rewritten from them (two processes need two --out files); runs are kept in --work.

    python scripts/pt_tables.py --data DIR --tag gap --work DIR --seed 0 --rows table --out results/pt_tables.csv
        [--baseline RUN] [--fig3 PNG]
    --rows: groups of rows (comma-separated): "table" (Tables 1 and 4), "sweep_n", "sweep_eps", "sweeps" or "all".
"""
import argparse, logging, shutil
from pathlib import Path

import pandas as pd
import torch

from reid_workbench.codes_metrics import evaluate_disentanglement, generate_swaps, load_factors, load_test_images, swap_ground_truth
from reid_workbench.registry import load_trained, method_info
from reid_workbench.runs import evaluate_run
from results_table import RowWriter, timed
from reid_workbench.viz import image_grid, to_pil

GUIDED, UNGUIDED = "PT (CE guider, N=2, eps 0.4)", "+ generated, no guider (N=2, eps 0.2)"
ROWS = {UNGUIDED: ("none", dict(epsilon_generated=0.2)), GUIDED: ("ce", {}),
        "PT, N=1": ("ce", dict(n_generated=1)), "PT, N=4": ("ce", dict(n_generated=4)),
        "PT, eps=0": ("ce", dict(epsilon_generated=0.0)), "PT, eps=0.2": ("ce", dict(epsilon_generated=0.2)),
        "PT, eps=0.6": ("ce", dict(epsilon_generated=0.6))}
GROUPS = {"table": [UNGUIDED, GUIDED], "sweep_n": ["PT, N=1", "PT, N=4"], "sweep_eps": ["PT, eps=0", "PT, eps=0.2", "PT, eps=0.6"]}
GROUPS["sweeps"] = GROUPS["sweep_n"] + GROUPS["sweep_eps"]
FIDELITY = ("recon_ssim", *(f"swap_{m}{r}{ref}" for m in ("l1", "ssim") for r in ("", "_person") for ref in ("", "_ref_a", "_ref_b")),
            "swap_mask_ssim_person", "swap_mask_ssim_person_ref_a", "swap_mask_ssim_person_ref_b",
            "swap_beats_both", "swap_beats_both_person", "appearance_effect")


def reid_scores(run: Path, data) -> dict:
    scores = evaluate_run(run, data)
    return {k: scores[k] for k in ("rank1", "mAP", "mINP")}


def fig3(models: dict, data, path: Path, people: int = 6) -> Path:
    "The paper's Fig. 3: test people drawn in another test image's pose by each generator, beside the ground truth."
    size = next(iter(models.values())).config.size
    test = load_test_images(data, size)
    persons = list(range(0, len(test.names), max(1, len(test.names) // people)))[:people]
    targets = [next(j for j in range(i + 17, i + 17 + len(test.names)) if test.pids[j % len(test.names)] != test.pids[i]) % len(test.names)
               for i in persons]
    factors = load_factors(data)
    truth = torch.stack([torch.from_numpy(swap_ground_truth(factors, test.names[i], test.names[j])).permute(2, 0, 1)
                         for i, j in zip(persons, targets)]) / 255
    columns = [test.images[persons] / 255, test.images[targets] / 255]
    for model in models.values():
        columns.append(generate_swaps(model, test.images[persons], test.images[targets],
                                      keypoints_a=test.poses(persons), keypoints_b=test.poses(targets)))
    columns.append(truth)
    cells = to_pil(torch.stack(columns, 1).flatten(0, 1), "unit")
    image_grid(cells, rows=len(persons), cols=len(columns),
               col_labels=["person", "pose from", *models, "truth"]).save(path)
    return path


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--tag", required=True, help="names the dataset in the table, e.g. gap / no gap")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rows", default="table")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--baseline", type=Path, default=None, help="an existing quickstart-recipe baseline run to reuse")
    p.add_argument("--fig3", type=Path, default=None)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    groups = [g.strip() for g in args.rows.split(",")]
    unknown = [g for g in groups if g not in GROUPS and g != "all"]
    if unknown: raise SystemExit(f"--rows: unknown group(s) {unknown}; known: {list(GROUPS)} or all")
    rows = list(ROWS) if "all" in groups else list(dict.fromkeys(r for g in groups for r in GROUPS[g]))
    emit = RowWriter(args.out, data=args.tag, seed=args.seed)
    guider = args.baseline or args.work / f"baseline_{args.seed}"
    if args.baseline is None:
        seconds = timed("baseline", args.data, guider, seed=args.seed, config_overrides=method_info("baseline").quickstart)
    else: seconds = float(pd.read_csv(guider / "losses.csv")["seconds"].max())
    emit({"row": "baseline (the guider)", **reid_scores(guider, args.data), "train_s": seconds})
    generators = {}
    for kind in dict.fromkeys(ROWS[r][0] for r in rows):
        run = args.work / f"generator_{kind}_{args.seed}"
        if (run / "checkpoints" / "last.pt").is_file():           # another invocation's (sweeps reuse the table's)
            seconds = float(pd.read_csv(run / "losses.csv")["seconds"].max())
        else: seconds = timed("pt", args.data, run, seed=args.seed, config_overrides=dict(guider_run=str(guider), guider=kind, epochs_reid=0))
        dis = evaluate_disentanglement(load_trained(run), args.data, num_pairs=64)
        emit({"row": f"generator, guider {kind}", **{k: dis[k] for k in FIDELITY}, "train_s": seconds})
        generators[kind] = run
    if args.fig3 and {"none", "ce"} <= set(generators):
        fig3({"no guider": load_trained(generators["none"]), "CE guider": load_trained(generators["ce"])}, args.data, args.fig3)
    for name in rows:
        kind, changes = ROWS[name]
        run = args.work / f"{name.replace(' ', '_').replace(',', '').replace('(', '').replace(')', '').replace('=', '')}_{args.seed}"
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(generators[kind], run)
        seconds = timed("pt", args.data, run, seed=args.seed, accept_changes=True,      # resumes into the re-ID stage
                        config_overrides=dict(guider_run=str(guider), guider=kind) | changes)
        emit({"row": name, **reid_scores(run, args.data), "train_s": seconds})


if __name__ == "__main__":
    main()
