"""pt-GAN's Fig. 5 and Fig. 6 on SynthReID from trained Table-II runs: the K target poses of several clusterings
drawn as skeletons, and test people generated in all K poses of one run."""
import argparse
from pathlib import Path

from reid_workbench.codes_metrics import load_test_images
from reid_workbench.core import convert_range
from reid_workbench.methods.ptgan import pose_figure
from reid_workbench.registry import load_trained


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--runs", type=Path, nargs="+", required=True, help="pt-GAN runs whose target poses Fig. 6 draws")
    p.add_argument("--people", type=int, default=4)
    p.add_argument("--out", type=Path, required=True, help="folder for ptgan_fig5.png and ptgan_fig6.png")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    models = [load_trained(r) for r in args.runs]
    size = tuple(models[0].config.size)
    for run, model in zip(args.runs, models):
        poses = model.target_poses.numpy()
        pose_figure(poses, size, cols=12).save(args.out / f"ptgan_fig6_{run.name}.png")
    test = load_test_images(args.data, size)
    people = list(range(0, len(test.names), max(1, len(test.names) // args.people)))[:args.people]
    images = convert_range(test.images[people], "unit", "imagenet")             # uint8 in: read as [0, 255]
    models[0].transfer_figure(images, captions=[f"id {test.pids[i]}" for i in people], scale=1).save(args.out / "ptgan_fig5.png")


if __name__ == "__main__":
    main()
