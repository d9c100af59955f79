"""Realism: distances between the distributions of original and anonymized faces.

``fid_facenet``: the Fréchet distance between Gaussians fitted to the FaceNet-CASIA embeddings
(512-D, L2-normalised) of the original faces and of the anonymized faces,

    FD = ||mu_o - mu_a||^2 + Tr(Sigma_o + Sigma_a - 2 (Sigma_o Sigma_a)^(1/2)),

the formula of FID (Heusel et al. 2017) in the identity embedding space we have offline.
``kid_facenet``: the kernel inception distance (Binkowski et al. 2018) in the same space, the
unbiased MMD^2 with the cubic polynomial kernel ``k(x, y) = (x.y / d + 1)^3``, averaged over
random subsets. The standard Inception FID needs pytorch-fid and its weights
(``pt_inception-2015-12-05-*.pth``) in the torch cache; without them it is reported unavailable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import linalg

INCEPTION_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"


def frechet_distance_gaussians(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2); (D,) means, (D, D) covariances.

    A singular product gets ``1e-6 * I`` added to both covariances before the square root, as in
    pytorch-fid.
    """
    diff = np.asarray(mu1, np.float64) - mu2
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    covmean = np.real(covmean)
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to two sample sets (N, D) and (M, D)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return frechet_distance_gaussians(
        x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)
    )


def kernel_distance(
    x: np.ndarray, y: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float | None]:
    """KID between (N, D) and (M, D) samples: mean and standard deviation over ``subsets`` random
    subsets of ``min(subset_size, N, M)`` rows each (one subset, std None, when that is all of
    both sets), of the unbiased MMD^2

        MMD^2 = sum_{i!=j} k(x_i, x_j) / (m(m-1)) + sum_{i!=j} k(y_i, y_j) / (m(m-1))
                - 2 sum_{i,j} k(x_i, y_j) / m^2,      k(x, y) = (x.y / D + 1)^3.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    d = x.shape[1]
    m = min(subset_size, len(x), len(y))
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets if m < max(len(x), len(y)) else 1):
        a = x[rng.choice(len(x), m, replace=False)]
        b = y[rng.choice(len(y), m, replace=False)]
        kxx = (a @ a.T / d + 1) ** 3
        kyy = (b @ b.T / d + 1) ** 3
        kxy = (a @ b.T / d + 1) ** 3
        off = m * (m - 1)
        values.append(
            (kxx.sum() - np.trace(kxx)) / off + (kyy.sum() - np.trace(kyy)) / off
            - 2 * kxy.mean()
        )
    return float(np.mean(values)), (float(np.std(values)) if len(values) > 1 else None)


def inception_weights() -> Path | None:
    """pytorch-fid's Inception weights in the torch hub cache, or None."""
    import torch.hub

    path = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS
    return path if path.is_file() else None


def inception_fid_unavailable() -> str | None:
    """Why the standard Inception FID cannot run here, or None when it can."""
    import importlib.util

    if importlib.util.find_spec("pytorch_fid") is None:
        return ("pytorch-fid is not installed (pip install pytorch-fid and put its weights in "
                "the torch cache)")
    if inception_weights() is None:
        return (f"pytorch-fid's weights {INCEPTION_WEIGHTS} are not in the torch cache (they "
                "cannot be downloaded offline)")
    return None


def inception_features(crops: list[np.ndarray], device: str = "cpu", batch: int = 32) -> np.ndarray:
    """pytorch-fid's 2048-D pool features of (S, S, 3) uint8 face crops -> (N, 2048); only call
    when :func:`inception_fid_unavailable` is None (the weights are read from the torch cache)."""
    import torch
    from pytorch_fid.inception import InceptionV3

    model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).to(device).eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(crops), batch):
            x = torch.from_numpy(np.stack(crops[i:i + batch])).permute(0, 3, 1, 2).float() / 255
            out.append(model(x.to(device))[0].flatten(1).cpu().numpy())
    return np.concatenate(out)
