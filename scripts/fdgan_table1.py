"""FD-GAN's Table 1 (component analysis) re-run on SynthReID with the tiny preset; the numbers of the FD-GAN notebook.

For one seed: a baseline run with the quickstart's recipe (E's start, `encoder_run`), FD-GAN's stage I on top of it
(the Siamese baseline; the same for every row, since the switches act from stage II on), then each asked row resumes
a copy of stage I with its switches. Every row gets re-ID (rank-1, mAP, mINP) and, for the generative rows, pose-transfer
fidelity against SynthReID's ground truth. Rows go to --out's .jsonl as they finish and --out (CSV) is rewritten from
them (two processes need two --out files); runs are kept in --work.

    python scripts/fdgan_table1.py --data DIR --work DIR --seed 0 --rows all --out results/fdgan_table1.csv [--fig4 PNG]
    --rows takes names from ROWS (comma-separated) or "all"; --wait-stage1 waits for another process's stage I.
"""
import argparse, logging, shutil, time
from pathlib import Path

import torch

from reid_workbench.codes_metrics import (evaluate_disentanglement, generate_swaps, load_factors, load_test_images,
                                          swap_ground_truth)
from reid_workbench.registry import load_trained, method_info
from reid_workbench.runs import evaluate_run
from results_table import RowWriter, timed
from reid_workbench.viz import image_grid, to_pil

ROWS = {"FD-GAN": {}, "no sp.": dict(use_lsp=False), "no veri.": dict(use_lv=False), "no D_pd": dict(use_lpd=False),
        "no D_id": dict(use_lid=False), "no D_id & D_pd": dict(use_lid=False, use_lpd=False),
        "no pose aug.": dict(sigma_range=None), "share E": dict(share_encoder=True)}
FIDELITY = ("recon_ssim", *(f"swap_{m}{r}{ref}" for m in ("l1", "ssim") for r in ("", "_person") for ref in ("", "_ref_a", "_ref_b")),
            "swap_mask_ssim_person", "swap_mask_ssim_person_ref_a", "swap_mask_ssim_person_ref_b",
            "swap_beats_both", "swap_beats_both_person", "appearance_effect")


def measured(run: Path, data, name: str, seed: int, seconds: float, generative: bool = True) -> dict:
    scores = evaluate_run(run, data)
    row = {"row": name, "seed": seed, **{k: scores[k] for k in ("rank1", "mAP", "mINP")}}
    if generative:
        dis = evaluate_disentanglement(load_trained(run), data, num_pairs=64)
        row |= {k: dis[k] for k in FIDELITY}
    return row | {"train_s": seconds}


def fig4(model, data, path: Path, person: int = 0, poses: int = 7) -> Path:
    "One test person drawn in the poses of `poses` other test images, above SynthReID's ground truth."
    test = load_test_images(data, model.config.size)
    targets = [i for i in range(len(test.names)) if test.pids[i] != test.pids[person]][::37][:poses]
    a = test.images[[person] * len(targets)]
    moved = generate_swaps(model, a, test.images[targets], keypoints_a=test.poses([person] * len(targets)),
                           keypoints_b=test.poses(targets))
    factors = load_factors(data)
    truth = torch.stack([torch.from_numpy(swap_ground_truth(factors, test.names[person], test.names[i])).permute(2, 0, 1)
                         for i in targets])
    blank = torch.ones(1, 3, *a.shape[-2:])
    cells = to_pil(torch.cat([test.images[[person]] / 255, test.images[targets] / 255, blank, moved, blank, truth / 255]), "unit")
    image_grid(cells, rows=3, cols=len(targets) + 1, row_labels=["pose", "FD-GAN", "truth"],
               col_labels=["person"] + [f"pose {k + 1}" for k in range(len(targets))]).save(path)
    return path


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rows", default="all")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--fig4", type=Path, default=None)
    p.add_argument("--wait-stage1", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = list(ROWS) if args.rows == "all" else [r.strip() for r in args.rows.split(",")]
    unknown = [r for r in rows if r not in ROWS]
    if unknown: raise SystemExit(f"--rows: unknown row(s) {unknown}; known: {list(ROWS)}")
    encoder, stage1 = args.work / f"baseline_{args.seed}", args.work / f"siamese_{args.seed}"
    done = stage1 / "stage1_done"
    emit = RowWriter(args.out)
    if args.wait_stage1:
        while not done.is_file(): time.sleep(10)
    else:
        seconds = timed("baseline", args.data, encoder, seed=args.seed, config_overrides=method_info("baseline").quickstart)
        emit(measured(encoder, args.data, "baseline (E's start)", args.seed, seconds, generative=False))
        seconds = timed("fdgan", args.data, stage1, seed=args.seed,
                        config_overrides=dict(encoder_run=str(encoder), epochs_stage2=0, epochs_stage3=0))
        done.write_text(str(seconds))
        emit(measured(stage1, args.data, "Siamese baseline", args.seed, seconds, generative=False))
    for name in rows:
        run = args.work / f"{name.replace(' ', '_').replace('.', '').replace('&', 'and')}_{args.seed}"
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(stage1, run)
        seconds = timed("fdgan", args.data, run, seed=args.seed, accept_changes=True,   # resumes stage I, other switches
                        config_overrides=dict(encoder_run=str(encoder)) | ROWS[name])
        emit(measured(run, args.data, name, args.seed, seconds))
        if name == "FD-GAN" and args.fig4: fig4(load_trained(run), args.data, args.fig4)


if __name__ == "__main__":
    main()
