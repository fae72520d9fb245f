"""Generators that generate: the tiny DG-Net, trained a short fixed number of steps on a small SynthReID, changes the
person when only the appearance code changes — clearly more than the same network untrained — and a decoder that
ignores its appearance code fails the same check."""
import copy

import pytest
import torch

from reid_workbench.codes import Codes
from reid_workbench.codes_metrics import evaluate_disentanglement
from reid_workbench.core import seed_everything
from reid_workbench.data.synth import SynthConfig, write_synthreid
from reid_workbench.registry import load_trained, method_config, method_info
from reid_workbench.runs import train_run

DATA = dict(ids=48, cams=3, images_per_id=6, size=(64, 32))   # 24 training identities, 144 images
EPOCHS = 8                                                     # of 18 steps (8 pairs each): 144 steps
# measured (one thread, seed 0): 0.006 / 0.009 untrained (seeds 0 / 1), 0.015 after 72 steps, 0.034 after 144
EFFECT_MIN = 0.02


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    work = tmp_path_factory.mktemp("generates")
    root, _ = write_synthreid(work / "synth", SynthConfig.tiny(**DATA), progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seed_everything(0)
        untrained = method_info("dgnet").model(method_config("dgnet", "tiny"), 24).eval()
        seed_everything(0)
        train_run("dgnet", root, work / "run", preset="tiny", epochs=EPOCHS, progress=False, verify_images=False,
                  config_overrides=dict(milestones=[]))
        yield root, load_trained(work / "run", "cpu"), untrained
    finally: torch.set_num_threads(threads)


def _effect(model, root) -> float:
    return evaluate_disentanglement(model, root, num_pairs=32, diversity_ids=4)["appearance_effect"]


def _ignoring_appearance(model):
    "A copy of `model` whose decoder never sees the appearance code (zeros): what a leaky structure path amounts to."
    blind = copy.deepcopy(model)
    decode = blind.decode
    blind.decode = lambda codes: decode(Codes(torch.zeros_like(codes.appearance), codes.structure,
                                              codes.appearance_extra, codes.structure_extra))
    return blind


def test_training_makes_the_appearance_code_change_the_person(trained):
    root, model, untrained = trained
    effect, before = _effect(model, root), _effect(untrained, root)
    assert effect > EFFECT_MIN and effect > 2 * before, (effect, before)
    assert before < EFFECT_MIN


def test_a_decoder_that_ignores_appearance_fails_the_same_check(trained):
    root, model, _ = trained
    effect = _effect(_ignoring_appearance(model), root)
    assert effect == pytest.approx(0.0, abs=1e-6) and not effect > EFFECT_MIN
