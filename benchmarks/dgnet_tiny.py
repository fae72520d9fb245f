"""Train the tiny DG-Net preset on SynthReID (default size) and print the step time, the losses per epoch, re-ID
metrics, and save a swap grid and the sample grids.

Usage: python benchmarks/dgnet_tiny.py [--device auto] [--epochs N] [--threads 2] [--out DIR] [--set key=value ...]
"""
import argparse, json, tempfile, time
from pathlib import Path

import torch

from reid_workbench.codes import swap
from reid_workbench.data.datasets import load_synthreid
from reid_workbench.data.loaders import LoaderConfig, build_test_loaders
from reid_workbench.data.synth import SynthConfig, write_synthreid
from reid_workbench.methods.dgnet import DGNet, DGNetConfig
from reid_workbench.metrics import evaluate_features, extract_features
from reid_workbench.registry import load_trained
from reid_workbench.training import Trainer, TrainerConfig
from reid_workbench.viz import image_grid, to_pil


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--data", default=None, help="an existing SynthReID folder (default: write one)")
    ap.add_argument("--set", nargs="*", default=[], help="DGNetConfig overrides key=value (JSON values)")
    args = ap.parse_args()
    if args.threads: torch.set_num_threads(args.threads)
    work = Path(args.out or tempfile.mkdtemp(prefix="dgnet_tiny_"))
    t0 = time.perf_counter()
    root = Path(args.data) if args.data else write_synthreid(work / "synthreid", SynthConfig(), progress=False,
                                                             overwrite=True)[0]
    data = load_synthreid(root)
    print(f"SynthReID: {len(data.train)} train images, {data.num_train_pids} ids ({time.perf_counter() - t0:.1f}s)")
    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    if args.epochs is not None: overrides["epochs"] = args.epochs
    config = DGNetConfig.tiny(**overrides)
    print("config:", {k: v for k, v in config.to_dict().items() if k in overrides or k in ("epochs", "warmup_iters", "ramp_iters")})
    loader_cfg = config.loader_config(LoaderConfig(num_workers=0))
    method = DGNet(config, data.num_train_pids)
    qloader, gloader = build_test_loaders(data, loader_cfg)
    def eval_fn(m):
        device = next(m.parameters()).device
        qf, qp, qc = extract_features(m.embed, qloader, device=device)
        gf, gp, gc = extract_features(m.embed, gloader, device=device)
        return evaluate_features(qf, gf, qp, gp, qc, gc).iloc[0].to_dict()
    trainer = Trainer(method, data, work / "run", TrainerConfig(device=args.device, progress=False, log_every=5),
                      eval_fn=eval_fn, loader_config=loader_cfg)
    t0 = time.perf_counter()
    log = trainer.fit(resume="auto")
    seconds = time.perf_counter() - t0
    steps = trainer.global_step
    print(f"trained {config.epochs} epochs ({steps} steps) on {trainer.device} in {seconds:.1f}s "
          f"({seconds / max(steps, 1):.2f} s/step incl. checkpoints, samples and the final evaluation)")
    cols = [c for c in ("gen", "img1", "img2", "code1", "code2", "id_s", "id_c", "adv", "fine", "prim", "dis", "r1",
                        "acc", "lambda_prim") if c in log.columns]
    print(log.groupby(["stage", "epoch"], sort=False)[cols].mean().round(3).to_string())
    print("trained:", {k: round(v, 3) for k, v in trainer.metrics_history[-1].items() if isinstance(v, float)})
    model = load_trained(work / "run")
    batch = next(iter(qloader))
    people = batch["image"][torch.linspace(0, len(batch["image"]) - 1, 6).long()]
    with torch.no_grad():
        codes = model.encode(people)
        rows = [torch.cat([torch.full((1, *people.shape[1:]), 10.0), people])]
        rows += [torch.cat([people[i:i + 1], model.decode(swap(codes[i], codes))]) for i in range(len(people))]
    path = work / "swap_grid.png"
    image_grid(to_pil(torch.cat(rows)), rows=len(people) + 1, cols=len(people) + 1).save(path)
    print("swap grid:", path, "| samples:", work / "run" / "samples")


if __name__ == "__main__":
    main()
