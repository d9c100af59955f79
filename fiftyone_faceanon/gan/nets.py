"""Generator and discriminator of ``dp68`` (paper III-B-1: a DeepPrivacy-style inpainting GAN
conditioned on the 68 landmarks). torch only.

Generator ``G(x, m, l, z)``: a U-Net over the (N, 3, S, S) context crop ``x`` in [-1, 1] with
the face region ``m`` (N, 1, S, S) (1 = face) blanked, the (N, 9, S, S) landmark image ``l``
concatenated again at every scale of encoder and decoder, and a noise vector ``z`` (N, Z) that
enters as feature maps at the bottleneck and as a per-channel scale and shift (FiLM) in every
decoder block, so different ``z`` give different people. Its output is composited:

    y = x * (1 - m) + G_raw(x * (1 - m), m, l, z) * m

Discriminator ``D(y, m, l)``: convolutions over the image with the same mask and landmark image
concatenated, down to 4 x 4, then a linear score (a logit: real > 0).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .shards import LANDMARK_CHANNELS

#: Channels of the coarse z feature maps at the generator's bottleneck.
Z_MAPS = 16


@dataclass(frozen=True)
class NetConfig:
    """Sizes shared by G and D: ``resolution`` S (a power of two >= 32), ``channels`` at full
    resolution (doubled at each halving up to ``max_channels``), ``z_dim``, ``bottleneck`` (the
    generator's coarsest side)."""

    resolution: int = 128
    channels: int = 32
    max_channels: int = 256
    z_dim: int = 64
    bottleneck: int = 8

    def widths(self) -> list[int]:
        """Channels per level, from S down to the bottleneck (or 4 for D)."""
        levels = int(math.log2(self.resolution)) - 1
        return [min(self.channels * 2**i, self.max_channels) for i in range(levels)]

    def as_dict(self) -> dict:
        return asdict(self)


def conv(cin: int, cout: int, k: int = 3) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2)


def act(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


def resize_to(l: torch.Tensor, size: int) -> torch.Tensor:
    """The landmark image at ``size`` px (area average, so thin lines survive downscaling)."""
    return l if l.shape[-1] == size else F.adaptive_avg_pool2d(l, size)


class EncoderBlock(nn.Module):
    """[h, l] -> conv -> conv -> 2x average pool: (N, cin, s, s) -> (N, cout, s/2, s/2)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = conv(cin + LANDMARK_CHANNELS, cin)
        self.conv2 = conv(cin, cout)

    def forward(self, h: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
        h = act(self.conv1(torch.cat([h, resize_to(l, h.shape[-1])], 1)))
        return F.avg_pool2d(act(self.conv2(h)), 2)


class DecoderBlock(nn.Module):
    """2x nearest upsample, [h, skip, l] -> conv -> FiLM(z) -> conv:
    (N, cin, s, s) -> (N, cout, 2s, 2s); ``h = h * (1 + gamma(z)) + beta(z)``."""

    def __init__(self, cin: int, cskip: int, cout: int, z_dim: int):
        super().__init__()
        self.conv1 = conv(cin + cskip + LANDMARK_CHANNELS, cout)
        self.film = nn.Linear(z_dim, 2 * cout)
        self.conv2 = conv(cout, cout)

    def forward(self, h, skip, l, z):
        h = F.interpolate(h, scale_factor=2, mode="nearest")
        h = act(self.conv1(torch.cat([h, skip, resize_to(l, h.shape[-1])], 1)))
        gamma, beta = self.film(z)[:, :, None, None].chunk(2, 1)
        return act(self.conv2(h * (1 + gamma) + beta))


class Generator(nn.Module):
    """U-Net inpainter; ``forward(x (N,3,S,S), m (N,1,S,S), l (N,9,S,S), z (N,Z)) -> (N,3,S,S)``
    composited (see the module docstring), values in [-1, 1]."""

    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.widths()
        self.levels = int(math.log2(cfg.resolution // cfg.bottleneck))
        self.stem = conv(3 + 1 + LANDMARK_CHANNELS, w[0])
        self.down = nn.ModuleList(EncoderBlock(w[i], w[i + 1]) for i in range(self.levels))
        b = w[self.levels]
        self.z_maps = nn.Linear(cfg.z_dim, Z_MAPS * cfg.bottleneck**2)
        self.mid = conv(b + Z_MAPS + LANDMARK_CHANNELS, b)
        self.up = nn.ModuleList(
            DecoderBlock(w[i + 1], w[i], w[i], cfg.z_dim) for i in reversed(range(self.levels))
        )
        self.to_rgb = conv(w[0], 3, 1)

    def forward(self, x, m, l, z):
        h = act(self.stem(torch.cat([x * (1 - m), m, l], 1)))
        skips = []
        for block in self.down:
            skips.append(h)
            h = block(h, l)
        zm = self.z_maps(z).view(-1, Z_MAPS, self.cfg.bottleneck, self.cfg.bottleneck)
        h = act(self.mid(torch.cat([h, zm, resize_to(l, h.shape[-1])], 1)))
        for block, skip in zip(self.up, reversed(skips)):
            h = block(h, skip, l, z)
        return x * (1 - m) + torch.tanh(self.to_rgb(h)) * m


class Discriminator(nn.Module):
    """``forward(y (N,3,S,S), m (N,1,S,S), l (N,9,S,S)) -> (N,)`` logits, conditioned by
    concatenating the mask and the landmark image at full resolution and again at every scale."""

    def __init__(self, cfg: NetConfig):
        super().__init__()
        w = cfg.widths()
        n = int(math.log2(cfg.resolution // 4))
        self.stem = conv(3 + 1 + LANDMARK_CHANNELS, w[0])
        self.down = nn.ModuleList(EncoderBlock(w[i], w[i + 1]) for i in range(n))
        self.final = conv(w[n], w[n])
        self.head = nn.Linear(w[n] * 16, 1)

    def forward(self, y, m, l):
        h = act(self.stem(torch.cat([y, m, l], 1)))
        for block in self.down:
            h = block(h, l)
        return self.head(act(self.final(h)).flatten(1)).squeeze(1)


def parameter_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
