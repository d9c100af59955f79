"""Lighting: scale-invariant errors of paper eqs. (3) and (4) over the facial pixels.

Images are float RGB in [0, 1]; both images of a pair are the crops of the original and the
anonymized image taken with the original face's crop transform, and ``mask`` (S, S) selects the
original's face region (``faces.face_region``). The optimal scale has the closed form of a
one-parameter least-squares fit:

    alpha* = <X_o, X_a> / <X_a, X_a>          (0 when X_a is 0 over the mask)

SfSNet (the paper's shading estimator) is not available offline: Si-L2 is measured between the
Retinex shading maps of eq. (1) (``photometric.shading``), the same decomposition the
anonymizer's relighting uses; the metric keeps its name ``si_l2``.
"""

from __future__ import annotations

import numpy as np

from ..photometric import laplacian_variance, shading


def _scale_invariant_sse(orig: np.ndarray, anon: np.ndarray) -> float:
    """``min_alpha ||o - alpha a||^2`` for two equally shaped float arrays."""
    o = np.asarray(orig, np.float64).ravel()
    a = np.asarray(anon, np.float64).ravel()
    aa = float(a @ a)
    alpha = float(o @ a) / aa if aa > 0 else 0.0
    r = o - alpha * a
    return float(r @ r)


def si_mse(orig: np.ndarray, anon: np.ndarray, mask: np.ndarray) -> float:
    """Eq. (3): ``Si-MSE = 1/N_I * min_alpha ||I_o - alpha I_a||_2^2`` over the ``N_I`` pixels with
    ``mask > 0``; the squared norm sums the three channels (as written in the paper).

    (S, S, 3) float images in [0, 1], (S, S) mask -> float.
    """
    sel = np.asarray(mask) > 0
    n = int(sel.sum())
    if n == 0:
        return float("nan")
    return _scale_invariant_sse(orig[sel], anon[sel]) / n


def si_l2(shade_orig: np.ndarray, shade_anon: np.ndarray, mask: np.ndarray) -> float:
    """Eq. (4) between two (S, S) shading maps over the ``N`` pixels with ``mask > 0``:
    ``Si-L2 = sqrt(1/N * min_alpha ||S_o - alpha S_a||_2^2)``.

    The paper's printed form ``min_alpha alpha * sqrt(...)`` would be minimised by ``alpha = 0``;
    we read the leading ``alpha`` as a typo and normalise by ``N`` (a root-mean-square residual),
    so the value does not depend on the crop size.
    """
    sel = np.asarray(mask) > 0
    n = int(sel.sum())
    if n == 0:
        return float("nan")
    return float(np.sqrt(_scale_invariant_sse(shade_orig[sel], shade_anon[sel]) / n))


def lighting_metrics(
    orig: np.ndarray,
    anon: np.ndarray,
    mask: np.ndarray,
    shade_orig: np.ndarray | None = None,
    shade_anon: np.ndarray | None = None,
) -> dict[str, float]:
    """``{"si_mse", "si_l2"}`` for two (S, S, 3) float crops in [0, 1] and an (S, S) face mask;
    Si-L2 on their Retinex shadings ``S = B(gray(I))`` (eq. 1), computed here unless given."""
    s_o = shading(orig) if shade_orig is None else shade_orig
    s_a = shading(anon) if shade_anon is None else shade_anon
    return {"si_mse": si_mse(orig, anon, mask), "si_l2": si_l2(s_o, s_a, mask)}


def sharpness_ratio(orig: np.ndarray, anon: np.ndarray, landmarks: np.ndarray) -> float:
    """Detail kept: ``var(Laplacian(gray(I_a))) / var(Laplacian(gray(I_o)))`` over the face region
    (hull of the 68 landmarks and the forehead), both cropped at the face's own resolution
    (``faces.crop_size_for``: 2x the landmarks' extent, 128-512 px). 1 means as detailed as
    the original; a blurred average face gives about 0.2. (H, W, 3) uint8 images, (68, 2)
    landmarks in image pixels."""
    import cv2

    from ..faces import crop_face, crop_size_for, crop_transform, face_region

    crop = crop_transform(landmarks, crop_size_for(landmarks))
    region = face_region(crop.to_crop(landmarks), crop.size) > 0
    var = [laplacian_variance(cv2.cvtColor(crop_face(im, crop), cv2.COLOR_RGB2GRAY).astype(
        np.float32), region) for im in (orig, anon)]
    return float(var[1] / max(var[0], 1e-6))
