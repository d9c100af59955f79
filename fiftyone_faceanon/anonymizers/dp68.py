"""``dp68``: the project's own inpainting GAN (paper III-B-1), conditioned on the 68 landmarks.

The generator (:mod:`fiftyone_faceanon.gan.nets`) sees each crop with its face region blanked,
the landmarks rasterised as a landmark image, and a noise vector drawn from the face's
``numpy.random.Generator``; it paints a new face into the region. Its EMA weights ship as
``models/dp68_<S>.pt`` (float16; the highest resolution listed is used), checked against the
manifest's sha256. Crops whose size differs from the generator's resolution are resized to it and
back; the face region is recomputed from the landmarks at that size with the same
``faces.face_region`` the pipeline used for ``regions``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..faces import resolve_device
from ..weights import WeightsError, manifest, model_path
from .base import Anonymizer, BackendUnavailable, register


def shipped_weights() -> str:
    """The manifest's ``dp68_*.pt`` of the highest resolution (``dp68_128.pt`` beats
    ``dp68_64.pt``); raises :class:`WeightsError` when none is listed."""
    files = manifest()["files"]
    names = [n for n in files if n.startswith("dp68_") and n.endswith(".pt")]
    if not names:
        raise WeightsError("models/dp68_*.pt: not listed in manifest.json")
    return max(names, key=lambda n: files[n].get("resolution", 0))


@register("dp68", "Inpainting GAN trained here, conditioned on the 68 landmarks, relit")
class DP68(Anonymizer):
    photometric = True

    def __init__(self, weights: Path | None = None, device: str = "auto",
                 crop_size: int | None = None, batch_size: int = 32):
        try:
            path = Path(weights) if weights is not None else model_path(shipped_weights())
        except WeightsError as e:
            raise BackendUnavailable(
                f"dp68: no trained generator is shipped ({e}); train one with `faceanon train` "
                "and ship it with `faceanon export-dp68`"
            ) from None
        import torch

        from ..gan.train import load_generator

        self.torch = torch
        self.device = torch.device(resolve_device(device))
        self.G = load_generator(path, self.device)
        self.resolution = self.G.cfg.resolution
        self.crop_size = crop_size or self.resolution
        self.batch_size = batch_size

    def anonymize(self, crops, landmarks, regions, rngs, donors=None):
        """(N, S, S, 3) crops -> (N, S, S, 3) uint8; face ``i`` gets the noise vector
        ``z_i = rngs[i].standard_normal(Z)``, so the same generator state gives the same face."""
        from ..gan.shards import conditioning

        torch, r, s = self.torch, self.resolution, crops.shape[1]
        if s != r:
            crops = np.stack([cv2.resize(c, (r, r), interpolation=cv2.INTER_AREA) for c in crops])
            landmarks = (landmarks + 0.5) * (r / s) - 0.5
        z = np.stack([g.standard_normal(self.G.cfg.z_dim) for g in rngs]).astype(np.float32)
        out = []
        for i in range(0, len(crops), self.batch_size):
            part = slice(i, i + self.batch_size)
            x, m, l = (torch.from_numpy(a).to(self.device)
                       for a in conditioning(crops[part], landmarks[part]))
            with torch.no_grad():
                y = self.G(x, m, l, torch.from_numpy(z[part]).to(self.device))
            y = ((y.clamp(-1, 1) + 1) * 127.5).round().byte()
            out.append(y.permute(0, 2, 3, 1).cpu().numpy())
        out = np.concatenate(out)
        if s != r:
            out = np.stack([cv2.resize(o, (s, s), interpolation=cv2.INTER_CUBIC) for o in out])
        return out
