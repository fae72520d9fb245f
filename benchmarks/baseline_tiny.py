"""Train the tiny baseline preset on SynthReID (default size) on this machine and print time and re-ID metrics.

Usage: python benchmarks/baseline_tiny.py [--device auto] [--epochs N] [--depth 18] [--size 128x64]
"""
import argparse, shutil, tempfile, time
from pathlib import Path

import torch

from reid_workbench.data.datasets import load_synthreid
from reid_workbench.data.loaders import LoaderConfig, build_test_loaders
from reid_workbench.data.synth import SynthConfig, write_synthreid
from reid_workbench.methods.baseline import Baseline, BaselineConfig
from reid_workbench.metrics import evaluate_features, extract_features
from reid_workbench.registry import load_trained
from reid_workbench.training import Trainer, TrainerConfig


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--workers", type=int, default=0)
    args = ap.parse_args()
    if args.threads: torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="baseline_tiny_"))
    t0 = time.perf_counter()
    root, info = write_synthreid(work / "synthreid", SynthConfig(), progress=False)
    data = load_synthreid(root)
    print(f"SynthReID: {len(data.train)} train images, {data.num_train_pids} ids, written in {time.perf_counter() - t0:.1f}s")
    config = BaselineConfig.tiny() if args.epochs is None else BaselineConfig.tiny(epochs=args.epochs)
    loader_cfg = config.loader_config(LoaderConfig(num_workers=args.workers))
    method = Baseline(config, data.num_train_pids)
    qloader, gloader = build_test_loaders(data, loader_cfg)
    def eval_fn(m):
        qf, qp, qc = extract_features(m, qloader, device=next(m.parameters()).device)
        gf, gp, gc = extract_features(m, gloader, device=next(m.parameters()).device)
        return evaluate_features(qf, gf, qp, gp, qc, gc).iloc[0].to_dict()
    print("untrained:", {k: round(v, 3) for k, v in eval_fn(method).items()})
    trainer = Trainer(method, data, work / "run", TrainerConfig(device=args.device, progress=False), eval_fn=eval_fn,
                      loader_config=loader_cfg)
    t0 = time.perf_counter()
    log = trainer.fit()
    seconds = time.perf_counter() - t0
    print(f"trained {config.epochs} epochs ({trainer.global_step} steps) on {trainer.device} in {seconds:.1f}s "
          f"({seconds / trainer.global_step:.2f} s/step, P x K = {config.P} x {config.K})")
    print(log.groupby("epoch")[["loss", "id", "triplet", "acc"]].mean().round(3).to_string())
    print("trained:", {k: round(v, 3) for k, v in trainer.metrics_history[-1].items() if isinstance(v, float)})
    again = load_trained(work / "run")
    print("reloaded:", {k: round(v, 3) for k, v in eval_fn(again).items()})
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
