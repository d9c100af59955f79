"""Colour: lightness, chroma and CIEDE2000 differences of the albedo over face skin (paper eq. 5,
Tables I and V).

Both crops (float RGB in [0, 1], (S, S, 3), taken with the original face's crop transform) are
split into albedo ``A = I / S`` with the Retinex shading ``S = B(gray(I))`` (eqs. 1-2,
``photometric.shading`` / ``photometric.albedo``), the albedos are read as sRGB and converted to
CIE L*a*b* (D65, colour-science), and the differences are averaged over the skin mask:

    dL   = mean |L_o - L_a|
    dC   = mean | sqrt(a_o^2 + b_o^2) - sqrt(a_a^2 + b_a^2) |
    dE00 = mean CIEDE2000(Lab_o, Lab_a)               (colour.delta_E, method "CIE 2000")
    MSE-L  = mean ((L_o - L_a) / 100)^2
    MSE-ab = mean ( ((a_o - a_a) / 128)^2 + ((b_o - b_a) / 128)^2 ) / 2

The Retinex albedo is not bounded by 1 (a saturated channel divided by the grey level); it is not
clipped: the sRGB decoding and the Lab conversion are defined beyond 1, and clipping would hide
exactly the skin-tone differences being measured.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..faces import BROWS, LEFT_EYE, MOUTH, RIGHT_EYE
from ..photometric import albedo, shading
from .geometry import inter_ocular

#: Margin around eyes, brows and lips removed from the skin, in inter-ocular distances.
SKIN_MARGIN = 0.06
OUTER_LIPS = slice(MOUTH.start, MOUTH.start + 12)  # points 48-59


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) sRGB in [0, 1] (values above 1 allowed) -> (..., 3) CIE L*a*b*, D65."""
    import colour  # imported here: 1.1 s, and `faceanon gate` needs none of it

    return colour.XYZ_to_Lab(colour.sRGB_to_XYZ(np.asarray(rgb, np.float64)))


def delta_e2000(lab_orig: np.ndarray, lab_anon: np.ndarray) -> np.ndarray:
    """Per-pixel CIEDE2000 between two (..., 3) L*a*b* arrays -> (...)."""
    import colour

    return colour.delta_E(lab_orig, lab_anon, method="CIE 2000")


def skin_mask(landmarks: np.ndarray, size: int) -> np.ndarray:
    """(S, S) bool mask of face skin from (68, 2) crop-pixel landmarks: the convex hull of the 68
    points minus the eyes, the brows and the outer lips, each widened by ``SKIN_MARGIN``
    inter-ocular distances."""
    lm = np.asarray(landmarks, np.float64)
    px = lambda p: np.round(p * 16).astype(np.int32)  # noqa: E731  (4 fractional bits)
    margin = max(int(round(SKIN_MARGIN * inter_ocular(lm))), 1)
    mask = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(px(lm)), 1, cv2.LINE_8, shift=4)
    holes = np.zeros_like(mask)
    for part in (RIGHT_EYE, LEFT_EYE, OUTER_LIPS):
        cv2.fillPoly(holes, [px(lm[part])], 1, cv2.LINE_8, shift=4)
    for brow in (slice(BROWS.start, BROWS.start + 5), slice(BROWS.start + 5, BROWS.stop)):
        cv2.polylines(holes, [px(lm[brow])], False, 1, 1, cv2.LINE_8, shift=4)
    holes = cv2.dilate(holes, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1,) * 2))
    return (mask > 0) & (holes == 0)


def colour_metrics(
    orig: np.ndarray,
    anon: np.ndarray,
    mask: np.ndarray,
    shade_orig: np.ndarray | None = None,
    shade_anon: np.ndarray | None = None,
) -> dict[str, float]:
    """``{"delta_l", "delta_c", "delta_e2000", "mse_l", "mse_ab"}`` between the albedos of two
    (S, S, 3) float crops in [0, 1] over the (S, S) skin ``mask`` (formulas in the module
    docstring); their (S, S) shadings are computed here unless given. NaN for an empty mask."""
    sel = np.asarray(mask) > 0
    if not sel.any():
        return dict.fromkeys(("delta_l", "delta_c", "delta_e2000", "mse_l", "mse_ab"), float("nan"))
    s_o = shading(orig) if shade_orig is None else shade_orig
    s_a = shading(anon) if shade_anon is None else shade_anon
    lab_o = srgb_to_lab(albedo(orig, s_o)[sel])
    lab_a = srgb_to_lab(albedo(anon, s_a)[sel])
    d = lab_o - lab_a
    chroma_o = np.hypot(lab_o[:, 1], lab_o[:, 2])
    chroma_a = np.hypot(lab_a[:, 1], lab_a[:, 2])
    return {
        "delta_l": float(np.abs(d[:, 0]).mean()),
        "delta_c": float(np.abs(chroma_o - chroma_a).mean()),
        "delta_e2000": float(delta_e2000(lab_o, lab_a).mean()),
        "mse_l": float(((d[:, 0] / 100.0) ** 2).mean()),
        "mse_ab": float(((d[:, 1:] / 128.0) ** 2).mean()),
    }
