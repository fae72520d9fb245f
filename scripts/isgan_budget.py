"""IS-GAN metric-vs-minutes on SynthReID: copy a trained run (e.g. stage 1 only), train stage 2 (and 3) further in
chunks (exact resume) and evaluate the disentanglement (and re-ID with REID=1) after each chunk; one JSON row per chunk.

    python scripts/isgan_budget.py NAME OVERRIDES_JSON FROM_RUN CHUNKS_JSON  (FROM_RUN "-" = train from scratch)
    e.g. ... curve '{"epochs_stage1": 8, "epochs_stage3": 0}' runs/s1 '[{"epochs_stage2": 3}, {"epochs_stage2": 6}]'
Environment: ROOT (SynthReID, default /tmp/exp/synthreid), RUNS (default /tmp/isgan/runs), OUT (jsonl file)."""
import json, logging, os, shutil, sys, time
from reid_workbench.codes_metrics import evaluate_disentanglement
from reid_workbench.registry import load_trained
from reid_workbench.runs import evaluate_run, train_run

KEYS = ["recon_ssim", *(f"swap_{m}{r}{ref}" for m in ("l1", "ssim") for r in ("", "_person") for ref in ("", "_ref_a", "_ref_b")),
        "swap_beats_both", "swap_beats_both_person", "appearance_effect", "appearance_effect_truth"]

def main(name, overrides, start, chunks):
    root, runs = os.environ.get("ROOT", "/tmp/exp/synthreid"), os.environ.get("RUNS", "/tmp/isgan/runs")
    out = f"{runs}/{name}"
    shutil.rmtree(out, ignore_errors=True)
    if start != "-": shutil.copytree(start if "/" in start else f"{runs}/{start}", out)
    t_train = 0.0
    for chunk in chunks:                                  # cumulative epochs_stage2 / epochs_stage3
        t0 = time.perf_counter()
        log = train_run("isgan", root, out, preset="tiny", config_overrides=overrides | chunk, progress=False,
                        verify_images=False, accept_changes=True)
        t_train += time.perf_counter() - t0
        r = evaluate_disentanglement(load_trained(out, "cpu"), root, num_pairs=48, diversity_ids=8,
                                     figure=f"{out}/swaps_{int(log['step'].max())}.png")
        row = {"name": name, **chunk, "steps": int(log["step"].max()), "train_min": round(t_train / 60, 2)}
        row |= {k: round(r[k], 4) if isinstance(r[k], float) else r[k] for k in KEYS}
        if os.environ.get("REID"): row |= {k: round(evaluate_run(out, root)[k], 4) for k in ("rank1", "mAP")}
        print(json.dumps(row), flush=True)
        with open(os.environ.get("OUT", "/tmp/isgan/curves.jsonl"), "a") as f: f.write(json.dumps(row) + "\n")

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main(sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4]))
