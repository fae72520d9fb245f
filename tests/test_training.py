"""The Trainer: exact resume, the NaN guard, frozen modules, per-stage optimizers, update order, load_trained,
checkpoint errors, determinism, evaluation / samples, the dataset path, and DDP with two gloo processes."""
import importlib.util
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from reid_workbench.core import CheckpointError, load_checkpoint, save_checkpoint
from reid_workbench.registry import load_trained, method_info
from reid_workbench.training import Stage, Trainer, TrainerConfig, TrainingDiverged

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("ddp_train_toy", HERE / "ddp_train_toy.py")
toy = importlib.util.module_from_spec(_spec)
sys.modules["ddp_train_toy"] = toy
_spec.loader.exec_module(toy)

BATCHES = 4  # toy data: 32 images in batches of 8


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    "The toy models are tiny: one intra-op thread is faster than two on a shared 2-core machine."
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train(run_dir, resume=False, seed=0, eval_fn=None, trainer_options=None, **method_options):
    "Seed, build the toy method, train it; returns (trainer, loss log)."
    method = toy.build_method(seed=seed, **method_options)
    config = TrainerConfig(**{"seed": seed, "log_every": 1, "progress": False, **(trainer_options or {})})
    trainer = Trainer(method, toy.make_factory(), run_dir, config, eval_fn=eval_fn)
    # these tests change the toy's plan and test hooks (epochs, crash / NaN step) between runs on purpose
    return trainer, trainer.fit(resume=resume, accept_changes=resume is not False)


def assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a: assert torch.equal(a[k], b[k]), f"{k} differs"

def assert_same_log(a: pd.DataFrame, b: pd.DataFrame):
    "Two loss logs equal in everything but the wall-clock `seconds`, which must be there and never decrease."
    for log in (a, b): assert "seconds" in log and log["seconds"].is_monotonic_increasing, log
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"))


def test_config_and_stage_validation():
    with pytest.raises(ValueError, match="amp must be"): TrainerConfig(amp="on")
    with pytest.raises(ValueError, match="amp_dtype"): TrainerConfig(amp_dtype="fp8")
    with pytest.raises(ValueError, match="grad_clip"): TrainerConfig(grad_clip=0)
    with pytest.raises(ValueError, match="unknown sampler 'triplet'"): Stage("s", 1, sampler="triplet")
    assert TrainerConfig.from_json(TrainerConfig(amp=True, amp_dtype="fp16").to_json()) == TrainerConfig(amp=True, amp_dtype="fp16")
    trainer = Trainer(toy.build_method(), toy.make_factory(), "unused", TrainerConfig())
    assert trainer.device.type == "cpu" and not trainer.amp_enabled and not trainer.scaler.is_enabled()
    assert not trainer.channels_last and trainer.deterministic
    with pytest.raises(ValueError, match="resume must be"): trainer.fit(resume="yes")
    assert not Path("unused").exists()
    with pytest.raises(TypeError, match="loader factory .* or a ReIDDataset.*got list"):
        Trainer(toy.build_method(), [1, 2], "unused")


def test_grad_clip_bounds_the_update(tmp_path):
    def discriminator_change(**trainer_options):
        trainer, _ = train(tmp_path / str(len(list(tmp_path.iterdir()))), epochs=(0, 1, 0), trainer_options=trainer_options)
        start = trainer.method.snapshots["gan"]["state"]
        return sum((v - start[k]).norm() ** 2 for k, v in trainer.method.state_dict().items()
                   if k.startswith("discriminator")).sqrt().item()
    # SGD lr 0.01, momentum 0.9, 4 steps: clipped to norm 1e-6 the total move is below 0.01 * 1e-6 * 4 / (1 - 0.9)
    assert discriminator_change(grad_clip=1e-6) <= 0.01 * 1e-6 * 4 * 10 * 1.001
    assert discriminator_change() > 1e-3


@pytest.mark.parametrize("crash_at_step", [9, 13], ids=["inside-a-stage", "at-a-stage-boundary"])
def test_crashed_run_resumes_bitwise(tmp_path, crash_at_step):
    # stages id (1 epoch), gan (2), joint (1): steps 0-3 id, 4-7 gan e0, 8-11 gan e1, 12-15 joint.
    # A crash at step 9 resumes inside "gan" (its optimizers' states restored); at 13, at the start of "joint".
    straight, straight_log = train(tmp_path / "straight")
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(tmp_path / "crashed", crash_at_step=crash_at_step)
    ckpt = load_checkpoint(tmp_path / "crashed" / "checkpoints" / "last.pt")
    assert ckpt["global_step"] == (crash_at_step // BATCHES) * BATCHES
    assert set(ckpt["rng"]) == {"python", "numpy", "torch", "cuda"}
    crashed_log = pd.read_csv(tmp_path / "crashed" / "losses.csv")
    assert crashed_log["step"].max() == crash_at_step  # logged up to the crash, past the checkpoint
    resumed, resumed_log = train(tmp_path / "crashed", resume="auto")
    assert_same_weights(straight.method.state_dict(), resumed.method.state_dict())
    for name, opt in straight.optimizers.items():  # optimizer states too (joint's Adam / SGD momentum)
        for p, q in zip(opt.param_groups[0]["params"], resumed.optimizers[name].param_groups[0]["params"]):
            for key, value in opt.state[p].items(): assert torch.equal(value, resumed.optimizers[name].state[q][key])
    assert_same_log(resumed_log, straight_log)
    assert_same_log(pd.read_csv(tmp_path / "crashed" / "losses.csv"), pd.read_csv(tmp_path / "straight" / "losses.csv"))
    assert "resume from" in (tmp_path / "crashed" / "train.log").read_text()


def test_stage_checkpoint_every_overrides_the_trainer_and_resumes_exactly(tmp_path):
    "gan (3 epochs) checkpoints every 2: after id (step 4), gan epoch 1 (step 12) and its last epoch (step 16) only."
    def every_two(method):
        stages = method.stages()
        stages[1].checkpoint_every = 2
        method.stages = lambda: stages
        return method
    def run(run_dir, resume=False, **options):
        method = every_two(toy.build_method(seed=0, epochs=(1, 3, 0), **options))
        trainer = Trainer(method, toy.make_factory(), run_dir, TrainerConfig(seed=0, log_every=1, progress=False))
        return trainer, trainer.fit(resume=resume, accept_changes=resume is not False)
    straight, straight_log = run(tmp_path / "straight")
    marked = [l for l in (tmp_path / "straight" / "train.log").read_text().splitlines() if l.endswith("(checkpoint)")]
    assert [l.split(" epoch ")[1].split(" done")[0] for l in marked] == ["0", "1", "2"]       # id e0, gan e1, gan e2
    assert [l.split("stage ")[1].split(" ")[0] for l in marked] == ["'id'", "'gan'", "'gan'"]
    with pytest.raises(RuntimeError, match="simulated crash"): run(tmp_path / "crashed", crash_at_step=10)
    assert load_checkpoint(tmp_path / "crashed" / "checkpoints" / "last.pt")["global_step"] == BATCHES
    resumed, resumed_log = run(tmp_path / "crashed", resume="auto")
    assert_same_weights(straight.method.state_dict(), resumed.method.state_dict())
    assert_same_log(resumed_log, straight_log)


def test_finished_run_resume_is_a_no_op_and_fresh_start_refuses_to_overwrite(tmp_path):
    trainer, log = train(tmp_path / "run", epochs=(1, 1, 0))
    before = (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes()
    again, again_log = train(tmp_path / "run", resume=True, epochs=(1, 1, 0))
    assert again.global_step == trainer.global_step == 2 * BATCHES
    pd.testing.assert_frame_equal(again_log, log)
    assert (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes() == before
    with pytest.raises(FileExistsError, match="last.pt exists"):
        train(tmp_path / "run", epochs=(1, 1, 0))
    # more epochs for the last stage continue the finished run
    longer, longer_log = train(tmp_path / "run", resume=True, epochs=(1, 2, 0))
    assert longer.global_step == 3 * BATCHES and len(longer_log) == 3 * BATCHES


def test_nan_guard_keeps_last_good_checkpoint_and_log(tmp_path):
    reference, _ = train(tmp_path / "reference", epochs=(1, 0, 0))  # what epoch 0 of "id" gives
    with pytest.raises(TrainingDiverged) as info:
        train(tmp_path / "run", epochs=(2, 1, 0), nan_at_step=6)
    message = str(info.value)
    for part in ("loss 'ce'", "is nan", "stage 'id'", "epoch 1", "step 6", "last good checkpoint", "last.pt"):
        assert part in message, (part, message)
    assert (info.value.loss_name, info.value.stage, info.value.epoch, info.value.step) == ("ce", "id", 1, 6)
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert (ckpt["stage_name"], ckpt["epoch"], ckpt["global_step"]) == ("id", 0, BATCHES)
    assert_same_weights(ckpt["model"], reference.method.state_dict())
    log = pd.read_csv(tmp_path / "run" / "losses.csv")
    assert list(log["step"]) == [1, 2, 3, 4, 5, 6] and np.isfinite(log["ce"]).all()
    assert "training diverged" in (tmp_path / "run" / "train.log").read_text()
    # the diverged run, fixed, resumes from the good checkpoint and ends as a clean run does
    clean, clean_log = train(tmp_path / "clean", epochs=(2, 1, 0))
    fixed, fixed_log = train(tmp_path / "run", resume=True, epochs=(2, 1, 0))
    assert_same_weights(fixed.method.state_dict(), clean.method.state_dict())
    assert_same_log(fixed_log, clean_log)


def test_nan_guard_names_the_optimizer_loss_and_nan_weights(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"loss 'd_adv' is nan at stage 'gan' \(2/3\), epoch 0, step 5"):
        train(tmp_path / "gan", epochs=(1, 1, 0), nan_at_step=5)
    # NaN weights behind finite losses are caught before the epoch's checkpoint is written
    with pytest.raises(TrainingDiverged, match="parameter 'classifier.weight'.*stage 'id'.*epoch 1"):
        train(tmp_path / "weights", epochs=(2, 0, 0), nan_weights_at_step=7)
    ckpt = load_checkpoint(tmp_path / "weights" / "checkpoints" / "last.pt")
    assert ckpt["global_step"] == BATCHES and torch.isfinite(ckpt["model"]["classifier.weight"]).all()


def test_frozen_modules_do_not_change_and_are_trainable_again(tmp_path):
    trainer, _ = train(tmp_path / "run")
    m, snaps = trainer.method, trainer.method.snapshots
    start, after_id, after_gan = snaps["id"]["state"], snaps["gan"]["state"], snaps["joint"]["state"]
    final = m.state_dict()
    def part(state, prefix): return {k: v for k, v in state.items() if k.startswith(prefix)}
    # stage "id" froze generator and discriminator; stage "gan" froze the encoder, BatchNorm running stats included
    assert_same_weights(part(after_id, "generator"), part(start, "generator"))
    assert_same_weights(part(after_id, "discriminator"), part(start, "discriminator"))
    assert_same_weights(part(after_gan, "encoder"), part(after_id, "encoder"))
    assert any(k.endswith("running_mean") for k in part(after_gan, "encoder"))
    assert not torch.equal(after_id["encoder.1.weight"], start["encoder.1.weight"])
    assert not torch.equal(after_id["encoder.2.running_mean"], start["encoder.2.running_mean"])
    assert not torch.equal(after_gan["generator.0.weight"], after_id["generator.0.weight"])
    assert not torch.equal(final["encoder.1.weight"], after_gan["encoder.1.weight"])  # trainable again in "joint"
    flags = {s: snaps[s]["requires_grad"] for s in snaps}
    assert not flags["id"]["generator.0.weight"] and flags["id"]["encoder.1.weight"]
    assert not flags["gan"]["encoder.1.weight"] and flags["gan"]["generator.0.weight"]
    assert all(flags["joint"].values())
    assert m.training_flags == {"id": {("encoder", True), ("generator", False)},
                                "gan": {("encoder", False), ("generator", True)},
                                "joint": {("encoder", True), ("generator", True)}}
    assert all(p.requires_grad for p in m.parameters()) and all(mod.training for mod in m.modules())


def test_optimizers_rebuilt_per_stage(tmp_path):
    trainer, log = train(tmp_path / "run")
    built = trainer.method.built
    assert [s for s, _ in built] == ["id", "gan", "joint"]
    gan_opts, joint_opts = built[1][1], built[2][1]
    assert gan_opts["G"] is not joint_opts["G"] and gan_opts["D"] is not joint_opts["D"]
    assert trainer.optimizers["G"] is joint_opts["G"]
    # the joint stage's Adam starts from scratch: its step counts only the joint batches
    g = joint_opts["G"]
    steps = {float(g.state[p]["step"]) for p in g.param_groups[0]["params"] if p in g.state}
    assert steps == {float(BATCHES)}
    # fresh schedulers too: G's lr is halved per epoch in "gan", back at 0.01 in "joint"
    lr = log.groupby(["stage", "epoch"])["lr_G"].first()
    assert lr[("gan", 0)] == 0.01 and lr[("gan", 1)] == 0.005 and lr[("joint", 0)] == 0.01
    assert log.query("stage == 'id'")["lr_id"].iloc[0] == 0.01


@pytest.mark.parametrize("g_first", [False, True])
def test_alternating_updates_follow_the_methods_order(tmp_path, g_first):
    trainer, _ = train(tmp_path / "run", epochs=(1, 1, 0), g_first=g_first)
    log = trainer.method.step_log
    assert log[:BATCHES] == [("id", "id")] * BATCHES
    pair = [("gan", "G"), ("gan", "D")] if g_first else [("gan", "D"), ("gan", "G")]
    assert log[BATCHES:] == pair * BATCHES


def test_step_context_errors(tmp_path):
    class WrongName(toy.ToyGAN):
        def training_step(self, batch, ctx): ctx.step("generator", self.classifier(self.encoder(batch["image"])).sum())
    method = WrongName(toy.ToyConfig(), 5)
    with pytest.raises(KeyError, match="no optimizer of that name.*'id'"):
        Trainer(method, toy.make_factory(), tmp_path / "a", TrainerConfig(progress=False)).fit()
    class NotScalar(toy.ToyGAN):
        def training_step(self, batch, ctx): ctx.step("id", self.classifier(self.encoder(batch["image"])))
    with pytest.raises(ValueError, match="scalar tensor"):
        Trainer(NotScalar(toy.ToyConfig(), 5), toy.make_factory(), tmp_path / "b", TrainerConfig(progress=False)).fit()
    class LogsNaN(toy.ToyGAN):  # a loss that is only logged, never stepped, is guarded too
        def training_step(self, batch, ctx): return {**super().training_step(batch, ctx), "extra": float("inf")}
    with pytest.raises(TrainingDiverged, match="loss 'extra' is inf at stage 'id' .*epoch 0, step 0"):
        Trainer(LogsNaN(toy.ToyConfig(), 5), toy.make_factory(), tmp_path / "c", TrainerConfig(progress=False)).fit()


def test_load_trained_round_trip(tmp_path):
    trainer, _ = train(tmp_path / "run", epochs=(1, 1, 0), hidden=7)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["method"] == "toy_gan_test" and config["method_module"] == "ddp_train_toy" and config["num_classes"] == 5
    assert config["method_config"]["hidden"] == 7 and config["trainer"]["log_every"] == 1 and "data" in config
    rng = torch.get_rng_state()
    loaded = load_trained(tmp_path / "run")
    assert torch.equal(torch.get_rng_state(), rng)  # loading does not move the caller's random stream
    assert isinstance(loaded, toy.ToyGAN) and not loaded.training and loaded.config.hidden == 7
    assert_same_weights(loaded.state_dict(), trainer.method.state_dict())
    x = torch.randn(4, *toy.IMAGE_SHAPE)
    trainer.method.eval()
    assert torch.equal(loaded.embed(x), trainer.method.embed(x))
    assert (method_info("toy_gan_test").config, method_info("toy_gan_test").model) == (toy.ToyConfig, toy.ToyGAN)


def test_bad_and_foreign_checkpoints_raise_checkpoint_error_naming_the_file(tmp_path):
    train(tmp_path / "run", epochs=(1, 0, 0))
    path = tmp_path / "run" / "checkpoints" / "last.pt"
    good = path.read_bytes()
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)            # a foreign torch file
    with pytest.raises(CheckpointError, match="last.pt.*not a reid-workbench checkpoint"): load_trained(tmp_path / "run")
    path.write_bytes(good[: len(good) // 2])                           # truncated
    with pytest.raises(CheckpointError, match="last.pt"): load_trained(tmp_path / "run")
    save_checkpoint({"weights": {}}, path)                             # ours, but no model
    with pytest.raises(CheckpointError, match="last.pt.*no 'model' weights"): load_trained(tmp_path / "run")
    other = toy.build_method(hidden=5).state_dict()                    # weights of another shape
    save_checkpoint({"model": other, "method": "toy_gan_test"}, path)
    with pytest.raises(CheckpointError, match="last.pt.*do not fit ToyGAN"): load_trained(tmp_path / "run")
    save_checkpoint({"model": other, "method": "dgnet"}, path)
    with pytest.raises(CheckpointError, match="last.pt.*method 'dgnet'"): load_trained(tmp_path / "run")
    save_checkpoint({"model": other, "method": "toy_gan_test"}, path)
    with pytest.raises(CheckpointError, match="last.pt.*do not fit"):  # resuming from it fails the same way
        train(tmp_path / "run", resume=True, epochs=(1, 0, 0))
    with pytest.raises(CheckpointError, match="missing.*last.pt.*not found"):
        train(tmp_path / "missing", resume=True)
    assert not (tmp_path / "missing").exists()
    with pytest.raises(FileNotFoundError, match="missing: no such run directory"): load_trained(tmp_path / "missing")


def test_determinism(tmp_path):
    a, log_a = train(tmp_path / "a")
    b, log_b = train(tmp_path / "b")
    assert_same_weights(a.method.state_dict(), b.method.state_dict())
    assert_same_log(log_a, log_b)
    c, _ = train(tmp_path / "c", seed=1)
    assert not torch.equal(a.method.state_dict()["encoder.1.weight"], c.method.state_dict()["encoder.1.weight"])


def test_eval_samples_and_files(tmp_path):
    calls = []
    def eval_fn(method):
        calls.append(method.training)
        torch.rand(10); np.random.rand(); __import__("random").random()   # random draws must not change training
        return {"rank1": np.float64(0.5 + len(calls) / 100), "cmc": torch.tensor([0.1, 0.2])}
    plain, plain_log = train(tmp_path / "plain")
    trainer, log = train(tmp_path / "run", eval_fn=eval_fn, trainer_options={"eval_every_epochs": 1})
    assert_same_weights(trainer.method.state_dict(), plain.method.state_dict())
    assert_same_log(log, plain_log)
    assert calls == [False] * 4  # once per epoch, in eval mode; not again at the end
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert len(metrics["history"]) == 4 and metrics["latest"]["rank1"] == pytest.approx(0.54)
    assert metrics["latest"]["cmc"] == pytest.approx([0.1, 0.2]) and metrics["latest"]["stage"] == "joint"
    assert [h["global_step"] for h in metrics["history"]] == [4, 8, 12, 16]
    assert trainer.evaluate()["rank1"] == pytest.approx(0.55)
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == [".lock", "checkpoints", "config.json", "losses.csv", "metrics.json", "samples", "train.log"]
    samples = sorted(p.name for p in (tmp_path / "run" / "samples").iterdir())
    assert samples == ["gan_e0.png", "gan_e1.png", "id_e0.png", "joint_e0.png"]
    grid = Image.open(tmp_path / "run" / "samples" / "gan_e1.png")
    assert grid.size == (6 * (4 + 2) + 2, 8 + 2 * 2) and grid.mode == "RGB"  # 6 images of 8x4 in one row, padding 2
    assert list(log.columns[:3]) == ["stage", "epoch", "step"] and {"ce", "d_adv", "lr_G", "lr_D"} <= set(log.columns)


def test_log_every_averages_windows(tmp_path):
    _, every = train(tmp_path / "a", epochs=(1, 0, 0))
    _, windows = train(tmp_path / "b", epochs=(1, 0, 0), trainer_options={"log_every": 3})
    assert list(windows["step"]) == [3, 4]  # a row per 3 steps, the rest at the epoch end
    assert windows["ce"].iloc[0] == pytest.approx(every["ce"].iloc[:3].mean())
    assert windows["ce"].iloc[1] == pytest.approx(every["ce"].iloc[3])


def _write_toy_dataset(root: Path):
    from reid_workbench.data.datasets import ImageRecord, ReIDDataset
    rng, records = np.random.default_rng(0), []
    for pid in range(5):
        for k in range(4):
            name = f"{pid:04d}_c{k % 2 + 1}s1_{k:06d}_00.png"
            Image.fromarray(rng.integers(0, 256, (8, 4, 3), dtype=np.uint8)).save(root / name)
            records.append(ImageRecord(name, pid, k % 2))
    return ReIDDataset("toy", root, records, records[:5], records[5:])


def test_dataset_path_uses_the_stage_sampler_and_resumes_exactly(tmp_path):
    from reid_workbench.data.loaders import SAMPLERS, LoaderConfig, TransformConfig
    from reid_workbench.training import SAMPLER_NAMES
    assert SAMPLER_NAMES == SAMPLERS
    (tmp_path / "data").mkdir()
    dataset = _write_toy_dataset(tmp_path / "data")
    loader_config = LoaderConfig(batch_size=4, P=2, K=2, transform=TransformConfig(size=(8, 4), pad=1))
    def run(name, resume=False, **options):
        method = toy.build_method(**options)
        trainer = Trainer(method, dataset, tmp_path / name, TrainerConfig(log_every=1, progress=False),
                          loader_config=loader_config)
        return trainer, trainer.fit(resume=resume, accept_changes=bool(resume))   # the crash hook is in the config
    straight, log = run("straight", epochs=(1, 2, 0))
    assert len(log) == 5 + 2 * 5  # "id": 20 images / 4; "gan": PK batches of 2 ids x 2 images, 5 per epoch
    config = json.loads((tmp_path / "straight" / "config.json").read_text())
    assert config["data"]["dataset"] == "toy" and config["data"]["loader"]["P"] == 2
    assert config["data"]["fingerprint"]["splits"]["train"] == 20 and len(config["data"]["fingerprint"]["train_digest"]) == 16
    with pytest.raises(RuntimeError, match="simulated crash"): run("crashed", epochs=(1, 2, 0), crash_at_step=12)
    resumed, resumed_log = run("crashed", resume=True, epochs=(1, 2, 0))
    assert_same_weights(resumed.method.state_dict(), straight.method.state_dict())
    assert_same_log(resumed_log, log)
    bad = Trainer(toy.build_method(), dataset, tmp_path / "bad", TrainerConfig(progress=False),
                  loader_config=loader_config)
    bad.stages[1] = Stage("gan", 1, transform={"no_such_field": 1})
    with pytest.raises(ValueError, match="Stage 'gan'.*no_such_field"):
        bad._factory(bad.stages[1], 0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_gloo_processes_stay_identical(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", str(HERE / "ddp_train_toy.py"), str(tmp_path)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"torchrun failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert (r0["world_size"], r0["rank"], r1["rank"]) == (2, 0, 1)
    assert r0["steps"] == r1["steps"] == 4 * BATCHES
    assert_same_weights(r0["state"], r1["state"])
    # only rank 0 writes files
    assert (tmp_path / "run_rank0" / "checkpoints" / "last.pt").is_file()
    assert not (tmp_path / "run_rank1").exists()
    # the gradients were really averaged: two half batches == one process on the whole batches
    method = toy.build_method(seed=0, batchnorm=False, dropout=0.0, epochs=(1, 2, 1))
    Trainer(method, toy.make_factory(shuffle="seeded"), tmp_path / "single",
            TrainerConfig(seed=0, log_every=1, progress=False)).fit()
    for k, v in method.state_dict().items():
        torch.testing.assert_close(r0["state"][k], v, rtol=1e-4, atol=1e-5, msg=lambda m: f"{k}: {m}")
