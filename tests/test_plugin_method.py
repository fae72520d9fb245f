"""A new method is one module and one registration: this module declares a config, a MethodInfo and a model, calls
`register_method` once, and every part of the workbench then takes the method without any other edit."""
import json
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reid_workbench.codes import Codes
from reid_workbench.core import Config
from reid_workbench.registry import MethodInfo, register_method
from reid_workbench.training import Method, Stage


@dataclass
class PluginConfig(Config):
    size: tuple[int, int] = (32, 16)
    epochs: int = 2
    lr: float = 0.1

    @classmethod
    def tiny(cls, **overrides): return cls(**overrides)


class PluginModel(Method):
    "Appearance: a learned code of the mean colour of the upper and the lower half; structure: the grey image."
    def __init__(self, config, num_classes):
        super().__init__(config, num_classes)
        self.code, self.colour = nn.Linear(3, 4), nn.Linear(4, 3)
    def stages(self): return [Stage("train", self.config.epochs, sampler="random")]
    def configure_optimizers(self, stage): return {"all": (torch.optim.SGD(self.parameters(), self.config.lr), None)}
    def training_step(self, batch, ctx):
        loss = F.l1_loss(self.decode(self.encode(batch["image"])), batch["image"])
        ctx.step("all", loss, loss_name="recon")
        return {"recon": loss.item()}
    def encode(self, images):
        halves = images.unflatten(2, (2, -1))
        grey = (halves - halves.mean((3, 4), keepdim=True)).mean(1, keepdim=True).flatten(2, 3)
        return Codes(self.code(halves.mean((3, 4)).transpose(1, 2)), grey)
    def decode(self, codes):
        colour = self.colour(codes.appearance).transpose(1, 2)[..., None, None]
        return (colour + codes.structure.unflatten(2, (2, -1))).flatten(2, 3)
    def embed(self, images): return F.normalize(self.encode(images).appearance.flatten(1), dim=1)


INFO = register_method(MethodInfo("plugin_demo", PluginConfig, PluginModel, summary="a method from one test module",
                                  structure_kind="tensor", num_parts=2, swap_body="b", presets=("tiny",)))


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from reid_workbench.data.synth import SynthConfig, write_synthreid
    root, _ = write_synthreid(tmp_path_factory.mktemp("plugin") / "synth", SynthConfig.tiny(ids=8), progress=False)
    return root


def test_listed_trained_by_the_cli_evaluated_and_measured(synth, tmp_path, capsys):
    from reid_workbench.cli import main
    from reid_workbench.codes_metrics import eval_codes
    from reid_workbench.methods import available_methods
    from reid_workbench.runs import evaluate_run, train_run
    assert "plugin_demo" in available_methods() and "plugin_demo" in available_methods(disentangler=True)
    assert main(["methods"]) == 0 and "plugin_demo" in capsys.readouterr().out
    assert main(["train", "--method", "plugin_demo", "--data", str(synth), "--out", str(tmp_path / "cli"),
                 "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "cli" / "config.json").read_text())["method"] == "plugin_demo"
    log = train_run("plugin_demo", synth, tmp_path / "run", device="cpu", progress=False)
    assert log["recon"].iloc[-1] < log["recon"].iloc[0]
    scores = evaluate_run(tmp_path / "run", device="cpu")
    assert scores["method"] == "plugin_demo" and 0 < scores["mAP"] <= 1
    codes = eval_codes(tmp_path / "run", synth, num_pairs=4, device="cpu", diversity_ids=2)
    assert codes["gt_body"] == "b" and codes["method"] == "plugin_demo"    # the ground truth its MethodInfo names
    assert main(["train", "--method", "plugin_demo", "--preset", "paper", "--data", str(synth), "--out",
                 str(tmp_path / "x")]) == 2
    assert "its presets: tiny" in capsys.readouterr().err


def test_its_applicable_dashboards_build(synth, tmp_path):
    from reid_workbench.dashboards import RunDashboards
    from reid_workbench.dashboards.core import ErrorDashboard
    from reid_workbench.runs import train_run
    train_run("plugin_demo", synth, tmp_path / "run", device="cpu", progress=False)
    tabs = RunDashboards(tmp_path / "run", device="cpu", max_images=12)
    assert not any(isinstance(d, ErrorDashboard) for d in tabs.dashboards.values())
    names = " ".join(tabs.dashboards).lower()
    assert "swap" in names and "interpolat" in names and "retrieval" in names and "part" in names  # 2 parts: shuffle
