"""The classical obfuscations of the paper's Fig. 1: blur, pixelate, mask, noise.

Each works on the whole (S, S, 3) crop; the pipeline keeps only the face region of the result.
Strengths are relative to the crop size, in which the face spans about half the width.
"""

from __future__ import annotations

import cv2
import numpy as np

from .base import Anonymizer, register


@register("blur", "Gaussian blur of the face region (sigma = 8% of the crop)")
class Blur(Anonymizer):
    def __init__(self, sigma: float = 0.08, crop_size: int = 128):
        self.sigma, self.crop_size = sigma, crop_size

    def anonymize(self, crops, landmarks, regions, rngs, donors=None):
        s = self.sigma * self.crop_size
        return np.stack([cv2.GaussianBlur(c, (0, 0), s) for c in crops])


@register("pixelate", "Mosaic of the face region, 16 blocks across the crop (8 across the face)")
class Pixelate(Anonymizer):
    def __init__(self, blocks: int = 16, crop_size: int = 128):
        self.blocks, self.crop_size = blocks, crop_size

    def anonymize(self, crops, landmarks, regions, rngs, donors=None):
        n, size = self.blocks, self.crop_size
        return np.stack([
            cv2.resize(cv2.resize(c, (n, n), interpolation=cv2.INTER_AREA), (size, size),
                       interpolation=cv2.INTER_NEAREST)
            for c in crops
        ])


@register("mask", "Solid fill of the face region (black by default)")
class Mask(Anonymizer):
    def __init__(self, color: tuple[int, int, int] = (0, 0, 0), crop_size: int = 128):
        self.color, self.crop_size = np.asarray(color, np.uint8), crop_size

    def anonymize(self, crops, landmarks, regions, rngs, donors=None):
        return np.broadcast_to(self.color, crops.shape).copy()


@register("noise", "Additive Gaussian noise on the face region (std 64 of 255), seeded")
class Noise(Anonymizer):
    def __init__(self, std: float = 64.0, crop_size: int = 128):
        self.std, self.crop_size = std, crop_size

    def anonymize(self, crops, landmarks, regions, rngs, donors=None):
        noisy = [c + rng.normal(0.0, self.std, c.shape) for c, rng in zip(crops, rngs)]
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
