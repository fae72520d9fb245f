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
