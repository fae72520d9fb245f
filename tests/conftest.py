"""Shared pytest setup: keep torch to the machine's cores and make notebooks' IN_TEST logic see a test run."""
import os

# Idle OpenMP threads sleep instead of spinning: on a busy 2-core machine spinning makes torch steps 5-50x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def artifacts_dir():
    "Folder for files a test leaves for people to look at (screenshots, figures): ./artifacts/ at the repo root."
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "artifacts"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    "A tiny SynthReID (8 identities) per test module; a module's own `synth` fixture replaces it."
    from reid_workbench.data.synth import SynthConfig, write_synthreid
    root, _ = write_synthreid(tmp_path_factory.mktemp("synth") / "synth", SynthConfig.tiny(ids=8), progress=False)
    return root


@pytest.fixture(scope="module")
def toy_run(synth, tmp_path_factory):
    "A finished toy_stripes run on `synth` (seconds to train): config.json, checkpoints/last.pt, losses.csv, samples."
    import toy_methods  # noqa: F401  (registers toy_stripes)
    from reid_workbench.runs import train_run
    run = tmp_path_factory.mktemp("toy_run") / "run"
    train_run("toy_stripes", synth, run, device="cpu", progress=False)
    return run
