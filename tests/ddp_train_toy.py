"""A toy three-stage GAN-like method for the Trainer tests, and the script that `test_training.py` launches under
`python -m torch.distributed.run --nproc_per_node=2 ddp_train_toy.py OUT_DIR` (gloo on CPU).

Under torchrun every process trains the toy method on its half of each batch and saves its final state dict to
OUT_DIR/rank<r>.pt; the run directory is OUT_DIR/run_rank<r>, so that the test can check rank 1 wrote nothing.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from reid_workbench.core import Config, seed_everything
from reid_workbench.registry import MethodInfo, register_method
from reid_workbench.training import Method, Stage, Trainer, TrainerConfig

IMAGE_SHAPE = (3, 8, 4)
NUM_CLASSES = 5


@dataclass
class ToyConfig(Config):
    size: tuple[int, int] = (8, 4)                 # (height, width) of IMAGE_SHAPE, as every method config has
    hidden: int = 12
    epochs: tuple[int, int, int] = (1, 2, 1)       # stages "id", "gan", "joint"
    lr: float = 0.01
    batchnorm: bool = True
    dropout: float = 0.2
    g_first: bool = False                          # generator update before the discriminator's
    nan_at_step: int | None = None                 # make the loss NaN at this global step
    crash_at_step: int | None = None               # raise RuntimeError at this global step (a crashed run)
    nan_weights_at_step: int | None = None         # write NaN into a weight after the update at this step


class ToyGAN(Method):
    "Encoder + classifier (re-ID), generator + discriminator (GAN); stage-wise freezing like IS-GAN."
    def __init__(self, config: ToyConfig, num_classes: int):
        super().__init__(config, num_classes)
        d, h = IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2], config.hidden
        norm = nn.BatchNorm1d(h) if config.batchnorm else nn.Identity()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(d, h), norm, nn.ReLU(), nn.Dropout(config.dropout))
        self.classifier = nn.Linear(h, num_classes)
        self.generator = nn.Sequential(nn.Linear(h, d), nn.Tanh())
        self.discriminator = nn.Sequential(nn.Linear(d, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1))
        self.step_log: list[tuple[str, str]] = []       # (stage, optimizer) of every optimizer.step, in order
        self.built: list[tuple[str, dict]] = []         # (stage, {name: optimizer}) per configure_optimizers call
        self.snapshots: dict[str, dict] = {}            # weights and requires_grad flags at each stage start
        self.training_flags: dict[str, set] = {}        # stage -> {(module, training)} seen in training_step

    def stages(self):
        e = self.config.epochs
        return [Stage("id", e[0], sampler="random"), Stage("gan", e[1], sampler="pk", transform={"flip_p": 0.0}),
                Stage("joint", e[2])]

    def frozen_modules(self, stage):
        return {"id": [self.generator, self.discriminator], "gan": [self.encoder], "joint": []}[stage.name]

    def configure_optimizers(self, stage):
        self.snapshots[stage.name] = {
            "state": {k: v.detach().clone() for k, v in self.state_dict().items()},
            "requires_grad": {n: p.requires_grad for n, p in self.named_parameters()}}
        lr = self.config.lr
        if stage.name == "id":
            opt = torch.optim.Adam([*self.encoder.parameters(), *self.classifier.parameters()], lr)
            built = {"id": (opt, torch.optim.lr_scheduler.StepLR(opt, 1, 0.5))}
        else:
            g = torch.optim.Adam([*self.encoder.parameters(), *self.classifier.parameters(),
                                  *self.generator.parameters()], lr, weight_decay=1e-4)
            d = torch.optim.SGD(self.discriminator.parameters(), lr, momentum=0.9)
            built = {"G": (g, torch.optim.lr_scheduler.StepLR(g, 1, 0.5)), "D": (d, None)}
        for name, (opt, _) in built.items():
            opt.register_step_post_hook(lambda *_, n=name, s=stage.name: self.step_log.append((s, n)))
        self.built.append((stage.name, {n: o for n, (o, _) in built.items()}))
        return built

    def training_step(self, batch, ctx):
        cfg, step, stage = self.config, ctx.global_step, ctx.stage.name
        if step == cfg.crash_at_step: raise RuntimeError(f"simulated crash at step {step}")
        self.training_flags.setdefault(stage, set()).update(
            (n, m.training) for n, m in (("encoder", self.encoder), ("generator", self.generator)))
        x, y = batch["image"], batch["pid"]
        if step == cfg.nan_at_step: x = x * float("nan")
        target = x.flatten(1).tanh()
        with ctx.autocast():
            feature = self.encoder(x)
            ce = F.cross_entropy(self.classifier(feature), y)
        if stage == "id":
            ctx.step("id", ce, loss_name="ce")
            losses = {"ce": ce.item()}
        else:
            fake = self.generator(feature)

            def d_update():
                real, gen = self.discriminator(target), self.discriminator(fake.detach())
                d = (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                     + F.binary_cross_entropy_with_logits(gen, torch.zeros_like(gen)))
                ctx.step("D", d, loss_name="d_adv")
                return d.item()

            def g_update():
                logit = self.discriminator(fake)
                g_adv = F.binary_cross_entropy_with_logits(logit, torch.ones_like(logit))
                recon = F.l1_loss(fake, target)
                ctx.step("G", g_adv + 5 * recon + ce, loss_name="g_total")
                return g_adv.item(), recon.item()

            if cfg.g_first:
                (g_adv, recon), d = g_update(), d_update()
            else:
                d = d_update(); g_adv, recon = g_update()
            losses = {"ce": ce.item(), "d_adv": d, "g_adv": g_adv, "recon": recon}
        if step == cfg.nan_weights_at_step:
            with torch.no_grad(): self.classifier.weight[0, 0] = float("nan")
        return losses

    def embed(self, images):
        return F.normalize(self.encoder(images), dim=1)

    def sample_images(self, batch):
        x = batch["image"][:3]
        return torch.cat([x, self.generator(self.encoder(x)).view(-1, *IMAGE_SHAPE)])


register_method(MethodInfo("toy_gan_test", ToyConfig, ToyGAN, presets=()))


def toy_data(n: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *IMAGE_SHAPE, generator=g), torch.arange(n) % NUM_CLASSES


def make_factory(n: int = 32, batch_size: int = 8, shuffle: str = "global"):
    """Loader factory over fixed random images. shuffle="global": torch's global generator (restored on resume);
    "seeded": a generator seeded by (stage, epoch), identical in every process, each process taking its share of
    every batch (rank::num_replicas)."""
    images, pids = toy_data(n)

    def factory(stage, epoch, num_replicas=1, rank=0):
        if shuffle == "global": order = torch.randperm(n)
        else: order = torch.randperm(n, generator=torch.Generator().manual_seed(1000 * len(stage.name) + epoch))
        for start in range(0, n - batch_size + 1, batch_size):
            idx = order[start:start + batch_size][rank::num_replicas]
            yield {"image": images[idx], "pid": pids[idx], "index": idx}
    return factory


def build_method(seed: int = 0, **config) -> ToyGAN:
    seed_everything(seed)
    return ToyGAN(ToyConfig(**config), NUM_CLASSES)


def main(out_dir: str) -> None:
    out = Path(out_dir)
    rank = int(__import__("os").environ["RANK"])
    torch.set_num_threads(1)
    method = build_method(seed=0, batchnorm=False, dropout=0.0, epochs=(1, 2, 1))
    trainer = Trainer(method, make_factory(shuffle="seeded"), out / f"run_rank{rank}",
                      TrainerConfig(seed=0, log_every=1, progress=False))
    log = trainer.fit()
    torch.save({"state": method.state_dict(), "world_size": trainer.world_size, "rank": trainer.rank,
                "steps": trainer.global_step, "rows": len(log)}, out / f"rank{rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1])
