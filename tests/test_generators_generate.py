"""Generators that generate: the tiny DG-Net, trained a short fixed number of steps on a small SynthReID, changes the
person when only the appearance code changes, and toward the appearance donor's clothes; a decoder that ignores its
appearance code fails the same check."""
import copy

import pytest
import torch

from reid_workbench.codes import Codes
from reid_workbench.codes_metrics import evaluate_disentanglement
from reid_workbench.core import seed_everything
from reid_workbench.data.synth import SynthConfig, write_synthreid
from reid_workbench.registry import load_trained
from reid_workbench.runs import train_run

DATA = dict(ids=48, cams=3, images_per_id=6, size=(64, 32))   # 24 training identities, 144 images
EPOCHS = 8                                                     # of 18 steps (8 pairs each): 144 steps
EFFECT_MIN, GAIN_MIN = 0.05, 0.01


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    work = tmp_path_factory.mktemp("generates")
    root, _ = write_synthreid(work / "synth", SynthConfig.tiny(**DATA), progress=False)
    seed_everything(0)
    torch.set_num_threads(1)
    train_run("dgnet", root, work / "run", preset="tiny", epochs=EPOCHS, progress=False, verify_images=False,
              config_overrides=dict(milestones=[]))
    return root, load_trained(work / "run", "cpu")


def _scores(model, root) -> dict:
    return evaluate_disentanglement(model, root, num_pairs=32, diversity_ids=4)


def test_the_appearance_code_moves_the_person_toward_the_donor(trained):
    root, model = trained
    scores = _scores(model, root)
    assert scores["appearance_effect"] > EFFECT_MIN, scores["appearance_effect"]
    assert scores["appearance_gain"] > GAIN_MIN, scores["appearance_gain"]


def _ignoring_appearance(model):
    "A copy of `model` whose decoder never sees the appearance code (zeros): what a leaky structure path amounts to."
    blind = copy.deepcopy(model)
    decode = blind.decode
    blind.decode = lambda codes: decode(Codes(torch.zeros_like(codes.appearance), codes.structure,
                                              codes.appearance_extra, codes.structure_extra))
    return blind


def test_a_decoder_that_ignores_appearance_fails_the_same_check(trained):
    root, model = trained
    scores = _scores(_ignoring_appearance(model), root)
    assert scores["appearance_effect"] == pytest.approx(0.0, abs=1e-6) and scores["appearance_gain"] == pytest.approx(0.0, abs=1e-6)
    assert not (scores["appearance_effect"] > EFFECT_MIN and scores["appearance_gain"] > GAIN_MIN)
