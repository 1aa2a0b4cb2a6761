"""The toy world's GAN: a small DCGAN (Radford et al., 2016) drawing 64x64 toy-world scenes.

It is the zoo generator ``toyworld_gan`` (registered in netdissect.models.generators), the embedded
default that makes GAN dissection testable on a laptop:

    gen = build_generator("toyworld_gan")        # z_dim 64, 64x64 images in [-1, 1]
    gen.default_layers                           # ["layer2", "layer3"]: 8x8 and 16x16 maps

Generator (`ToyGANGenerator`): a latent (B, 64) is reshaped to (B, 64, 1, 1) and goes through
four blocks of a transposed convolution, batch normalisation and ReLU, ``layer1`` (4x4, 256
units), ``layer2`` (8x8, 128), ``layer3`` (16x16, 64) and ``layer4`` (32x32, 32), then
``output``, a transposed convolution to RGB at 64x64 with tanh.  A block's output (after the
ReLU) is what dissection reads and ablation sets to zero.  Discriminator
(`ToyGANDiscriminator`): strided 4x4 convolutions (16, 32, 64, 128 channels) with spectral
normalisation and LeakyReLU (0.2), 64 -> 4 pixels, then one logit.  Only the generator ships.

The weights ship in `netdissect/assets/toyworld_gan.pt` (a state dict) with
`toyworld_gan.json` (architecture, training record); `netdissect.train_gan` reproduces them
(`netdissect train-gan`).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import spectral_norm

from netdissect.models.registry import RANDOM_WEIGHTS
from netdissect.models.weights import load_weights, read_metadata

__all__ = ["ToyGANGenerator", "ToyGANDiscriminator", "load_toyworld_gan", "toyworld_gan_metadata",
           "WEIGHTS", "METADATA", "Z_DIM", "WIDTHS", "D_WIDTHS", "DEFAULT_LAYERS", "IMAGE_SIZE"]

ASSETS = Path(__file__).resolve().parent.parent / "assets"
WEIGHTS = ASSETS / "toyworld_gan.pt"
METADATA = ASSETS / "toyworld_gan.json"

Z_DIM = 64
#: Units of layer1..layer4 (4x4, 8x8, 16x16, 32x32 feature maps).
WIDTHS = (256, 128, 64, 32)
#: Channels of the discriminator's layers (32x32 .. 4x4): half the generator's, because the
#: discriminator runs three times per step (real, fake, fake for the generator's loss) and
#: took three quarters of a step's time at the generator's widths.
D_WIDTHS = (16, 32, 64, 128)
DEFAULT_LAYERS = ["layer2", "layer3"]
IMAGE_SIZE = 64


def _up(cin: int, cout: int, first: bool = False) -> nn.Sequential:
    """A transposed convolution (4x4 from 1x1 when `first`, else doubling the side), BN, ReLU."""
    conv = (nn.ConvTranspose2d(cin, cout, 4, 1, 0, bias=False) if first
            else nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False))
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=False))


class ToyGANGenerator(nn.Module):
    """DCGAN generator: (B, z_dim) or (B, z_dim, 1, 1) latents -> (B, 3, 64, 64) in [-1, 1]."""

    default_layers = DEFAULT_LAYERS

    def __init__(self, z_dim: int = Z_DIM, widths: tuple[int, ...] = WIDTHS):
        super().__init__()
        self.z_dim = z_dim
        self.latent_shape = (z_dim,)
        w1, w2, w3, w4 = widths
        self.layer1 = _up(z_dim, w1, first=True)
        self.layer2 = _up(w1, w2)
        self.layer3 = _up(w2, w3)
        self.layer4 = _up(w3, w4)
        self.output = nn.Sequential(nn.ConvTranspose2d(w4, 3, 4, 2, 1), nn.Tanh())
        for m in self.modules():
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, 64, 64) in [-1, 1] of latents (B, Z) or (B, Z, 1, 1)."""
        x = z.reshape(len(z), self.z_dim, 1, 1)
        return self.output(self.layer4(self.layer3(self.layer2(self.layer1(x)))))


class ToyGANDiscriminator(nn.Module):
    """DCGAN discriminator with spectral normalisation: (B, 3, 64, 64) in [-1, 1] -> (B,) logits."""

    def __init__(self, widths: tuple[int, ...] = D_WIDTHS):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for cout in widths:  # 64 -> 32 -> 16 -> 8 -> 4
            layers += [spectral_norm(nn.Conv2d(cin, cout, 4, 2, 1)), nn.LeakyReLU(0.2)]
            cin = cout
        layers.append(spectral_norm(nn.Conv2d(cin, 1, 4, 1, 0)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One logit per image: high for images that look like the toy world's."""
        return self.net(x).flatten()


def toyworld_gan_metadata(path: str | os.PathLike | None = None) -> dict:
    """The metadata stored with the toy GAN's weights: architecture and training record."""
    return read_metadata(path if path is not None else METADATA, "toy GAN", "netdissect train-gan")


def load_toyworld_gan(weights: str | os.PathLike | None = None
                      ) -> tuple[ToyGANGenerator, str | None, str]:
    """The toy GAN's generator in eval mode with the shipped weights, a retrained file
    (`netdissect train-gan --out FILE`, metadata next to it) or "random"; with the path of
    the weights loaded (None for random) and their sha256 ("" for random).  The zoo entry
    `toyworld_gan` of netdissect.models.generators wraps it."""
    if weights is not None and str(weights) == RANDOM_WEIGHTS:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = ToyGANGenerator()
        loaded_path, fingerprint = None, ""
    else:
        path = Path(weights) if weights is not None else WEIGHTS
        meta = toyworld_gan_metadata(path.with_suffix(".json"))
        model = ToyGANGenerator(int(meta.get("z_dim", Z_DIM)),
                                tuple(meta.get("widths", WIDTHS)))
        loaded = load_weights(model, path)
        loaded_path, fingerprint = loaded["path"], loaded["sha256"]
    return model.eval(), loaded_path, fingerprint
