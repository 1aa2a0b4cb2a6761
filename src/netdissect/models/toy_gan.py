"""The toy world's GAN: a small DCGAN (Radford et al., 2016) drawing 64x64 toy-world scenes.

It is the zoo generator ``toyworld_gan`` (registered in netdissect.models.generators), the embedded
default that makes GAN dissection testable on a laptop:

    gen = build_generator("toyworld_gan")        # z_dim 64, 64x64 images in [-1, 1]
    gen.default_layers                           # ["layer2", "layer3"]: 8x8 and 16x16 maps

Generator (`ToyGANGenerator`): a latent (B, 64) is reshaped to (B, 64, 1, 1); a 4x4
transposed convolution makes ``layer1`` (4x4, 256 units), and three blocks that double the
side, ``layer2`` (8x8, 128), ``layer3`` (16x16, 64) and ``layer4`` (32x32, 32), lead to
``output``, RGB at 64x64 with tanh.  A doubling block is a nearest-neighbour upsampling and a
3x3 convolution, then batch normalisation and ReLU: a strided 4x4 transposed convolution, as
in DCGAN, covers the pixels of the doubled map unevenly and drew a chequerboard over every
image of the first toy GAN (Odena et al., "Deconvolution and checkerboard artifacts", 2016).
Weights whose metadata says ``"upsampling": "transposed"`` (or nothing) build that first
generator.  A block's output (after the ReLU) is what dissection reads and ablation sets to
zero.  Discriminator
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
           "WEIGHTS", "METADATA", "Z_DIM", "WIDTHS", "D_WIDTHS", "DEFAULT_LAYERS", "IMAGE_SIZE", "UPSAMPLING"]

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
#: How a block doubles the side: "nearest" (upsampling, then a 3x3 convolution) or
#: "transposed" (a strided 4x4 transposed convolution: the first toy GAN).
UPSAMPLING = "nearest"


def _doubling(cin: int, cout: int, upsampling: str, bias: bool = False) -> list[nn.Module]:
    """The modules that double the side: a nearest-neighbour upsampling and a 3x3 convolution,
    or a strided 4x4 transposed convolution."""
    if upsampling == "nearest":
        return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1, bias=bias)]
    return [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=bias)]


def _block(modules: list[nn.Module], cout: int) -> nn.Sequential:
    """`modules`, then batch normalisation and ReLU: a layer whose output is dissected."""
    return nn.Sequential(*modules, nn.BatchNorm2d(cout), nn.ReLU(inplace=False))


class ToyGANGenerator(nn.Module):
    """DCGAN generator: (B, z_dim) or (B, z_dim, 1, 1) latents -> (B, 3, 64, 64) in [-1, 1]."""

    default_layers = DEFAULT_LAYERS

    def __init__(self, z_dim: int = Z_DIM, widths: tuple[int, ...] = WIDTHS,
                 upsampling: str = UPSAMPLING):
        super().__init__()
        if upsampling not in ("nearest", "transposed"):
            raise ValueError(f"upsampling must be 'nearest' or 'transposed', got {upsampling!r}")
        self.z_dim = z_dim
        self.latent_shape = (z_dim,)
        w1, w2, w3, w4 = widths
        self.layer1 = _block([nn.ConvTranspose2d(z_dim, w1, 4, 1, 0, bias=False)], w1)
        self.layer2 = _block(_doubling(w1, w2, upsampling), w2)
        self.layer3 = _block(_doubling(w2, w3, upsampling), w3)
        self.layer4 = _block(_doubling(w3, w4, upsampling), w4)
        self.output = nn.Sequential(*_doubling(w4, 3, upsampling, bias=True), nn.Tanh())
        for m in self.modules():
            if isinstance(m, (nn.ConvTranspose2d, nn.Conv2d)):
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
        model = ToyGANGenerator(int(meta.get("z_dim", Z_DIM)), tuple(meta.get("widths", WIDTHS)),
                                meta.get("upsampling", "transposed"))
        loaded = load_weights(model, path)
        loaded_path, fingerprint = loaded["path"], loaded["sha256"]
    return model.eval(), loaded_path, fingerprint
