"""Two small registered Disentanglers for the conformance suite: one with a tensor structure code, one whose structure
is keypoints. Both are real (trainable) models, registered exactly as a method notebook registers a method."""
from __future__ import annotations
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from reid_workbench.codes import Codes
from reid_workbench.core import Config
from reid_workbench.methods.common import check_input_size
from reid_workbench.registry import MethodInfo, register_method
from reid_workbench.training import Method, Stage

STRIPES = 4


@dataclass
class ToyConfig(Config):
    size: tuple[int, int] = (32, 16)
    code_dim: int = 6
    epochs: int = 2
    lr: float = 0.05

    @classmethod
    def tiny(cls, **overrides): return cls(**overrides)


class _ToyMethod(Method):
    "One stage, one optimizer, an L1 reconstruction loss."
    def stages(self): return [Stage("train", self.config.epochs, sampler="random")]
    def configure_optimizers(self, stage): return {"model": (torch.optim.SGD(self.parameters(), self.config.lr), None)}
    def training_step(self, batch, ctx):
        loss = F.l1_loss(self.decode(self.encode_batch(batch)), batch["image"])
        ctx.step("model", loss, loss_name="recon")
        return {"recon": loss.item()}
    def sample_images(self, batch):
        return torch.cat([batch["image"][:2], self.decode(self.encode_batch(batch))[:2]])
    def embed(self, images): return F.normalize(self.appearance(images).flatten(1), dim=1)


class StripeToy(_ToyMethod):
    "Appearance: a learned code of each of 4 stripes' mean colour; structure: the grey detail around them."
    def __init__(self, config, num_classes):
        super().__init__(config, num_classes)
        self.colour_in, self.colour_out = nn.Linear(3, config.code_dim), nn.Linear(config.code_dim, 3)
    def appearance(self, images):
        return self.colour_in(images.unflatten(2, (STRIPES, -1)).mean((3, 4)).transpose(1, 2))    # B, 4, D
    def encode(self, images):
        stripes = check_input_size(self, images).unflatten(2, (STRIPES, -1))
        detail = (stripes - stripes.mean((3, 4), keepdim=True)).mean(1, keepdim=True).flatten(2, 3)
        return Codes(self.appearance(images), detail)
    def encode_batch(self, batch): return self.encode(batch["image"])
    def decode(self, codes):
        colour = self.colour_out(codes.appearance).transpose(1, 2)[..., None, None]              # B, 3, 4, 1, 1
        return (colour + codes.structure.unflatten(2, (STRIPES, -1))).flatten(2, 3)


class KeypointToy(_ToyMethod):
    "Appearance: a learned code of the mean colour; structure: (B, 18, 3) keypoints, drawn as discs by `decode`."
    def __init__(self, config, num_classes):
        super().__init__(config, num_classes)
        self.colour_in, self.colour_out = nn.Linear(3, config.code_dim), nn.Linear(config.code_dim, 3)
        self.background = nn.Parameter(torch.zeros(3))
    def appearance(self, images): return self.colour_in(images.mean((2, 3)))[:, None]             # B, 1, D
    def encode(self, images, keypoints=None):
        if keypoints is None: raise ValueError("KeypointToy.encode needs the images' keypoints (B, 18, 3)")
        check_input_size(self, images)
        return Codes(self.appearance(images), keypoints.float(), structure_kind="keypoints")
    def encode_batch(self, batch): return self.encode(batch["image"], batch["keypoints"])
    def decode(self, codes):
        h, w = self.config.size
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        kp = codes.structure.to(self.background.device)
        near = ((xs - kp[..., 0, None, None]) ** 2 + (ys - kp[..., 1, None, None]) ** 2 < (w / 8) ** 2)
        body = (near & (kp[..., 2, None, None] > 0)).any(1, keepdim=True).float()                  # B, 1, H, W
        colour = self.colour_out(codes.appearance[:, 0])[..., None, None]
        return body * colour + (1 - body) * self.background[None, :, None, None]


STRIPE_TOY = register_method(MethodInfo("toy_stripes", ToyConfig, StripeToy, summary="conformance toy (tensor)",
                                        structure_kind="tensor", num_parts=STRIPES, presets=("tiny",)))
KEYPOINT_TOY = register_method(MethodInfo("toy_keypoints", ToyConfig, KeypointToy, summary="conformance toy (keypoints)",
                                          structure_kind="keypoints", swap_body="b", presets=("tiny",)))
