"""Photometric post-processing, paper section III-B-2: relighting and colour transfer.

All images are float32 RGB in [0, 1], shape (H, W, 3); masks are float32 (H, W), non-zero on the
face region. Steps, each optional in :func:`postprocess`:

1. Retinex intrinsic decomposition (eqs. 1-2): ``S = B(gray(I))``, ``A = I / S``; relighting
   ``I_relight = A(I_a) * S(I_o)``.
2. Laplacian pyramid refinement: the lowest-frequency band of ``I_a``'s pyramid is replaced by
   ``I_relight``'s, then the pyramid is collapsed.
3. Colour transfer in YCbCr: Cb and Cr of the result matched in mean and standard deviation to
   the original's over the face region; Y untouched; clipped to [0, 1] (the paper's [0, 255]).

Beyond the paper, one more step keeps a new face from looking pasted onto a blurred or
low-resolution photo:

4. Detail matching: where the new face holds more than :data:`MOST_DETAIL` times the original's
   detail (:func:`detail`, at the face's own resolution in the image), it is blurred down to that
   (:func:`match_detail`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: Defaults for a 128 px crop (:data:`REFERENCE_CROP`). :func:`postprocess` scales
#: ``sigma_space`` with the crop and adds a pyramid level per doubling, so a face rendered at its
#: own resolution gets the same relighting as at 128 px.
REFERENCE_CROP = 128
SIGMA_SPACE = 6.0
SIGMA_COLOR = 0.1
PYRAMID_LEVELS = 4
EPS = 1e-3
#: :func:`match_detail` blurs a new face holding more than this multiple of the original's
#: detail down to it. The donors are crisp studio-like faces, and set into a soft photo they
#: look pasted on: the verified LFW DevTest 500 outputs held 1.42 times their photo's detail at
#: the median and 2.05 on average, 3.5 times at the median with each photo blurred by 1 px
#: (docs/benchmarks.md, "Detail matched to the photo").
MOST_DETAIL = 2.0
#: :func:`match_detail` finds its blur to this many pixels of the face's own resolution.
SIGMA_STEP = 0.05


@dataclass(frozen=True)
class PhotometricSettings:
    """Switches and parameters of :func:`postprocess`."""

    relight: bool = True
    pyramid: bool = True
    color_transfer: bool = True
    sigma_space: float = SIGMA_SPACE
    sigma_color: float = SIGMA_COLOR
    levels: int = PYRAMID_LEVELS
    #: :func:`match_detail`'s bound (:data:`MOST_DETAIL`); None: off
    most_detail: float | None = MOST_DETAIL

    @property
    def any(self) -> bool:
        return (self.relight or self.pyramid or self.color_transfer
                or self.most_detail is not None)


def gray(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB -> (H, W) luma, ITU-R BT.601 weights."""
    return cv2.cvtColor(image.astype(np.float32), cv2.COLOR_RGB2GRAY)


def shading(
    image: np.ndarray, sigma_space: float = SIGMA_SPACE, sigma_color: float = SIGMA_COLOR
) -> np.ndarray:
    """Shading map, eq. (1): ``S = B(gray(I))``, B a bilateral filter. (H, W, 3) -> (H, W).

    ``sigma_space`` in pixels, ``sigma_color`` in intensity units of the [0, 1] image; the
    filter's diameter is derived from ``sigma_space`` (OpenCV's ``d = -1``).
    """
    return cv2.bilateralFilter(gray(image), -1, sigma_color, sigma_space)


def albedo(image: np.ndarray, shade: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Albedo, eq. (2): ``A = I / S`` with ``S`` floored at ``eps``. (H, W, 3), (H, W) -> (H, W, 3)."""
    return image / np.maximum(shade, eps)[..., None]


def relight(
    anon: np.ndarray,
    orig: np.ndarray,
    sigma_space: float = SIGMA_SPACE,
    sigma_color: float = SIGMA_COLOR,
) -> np.ndarray:
    """``I_relight = A(I_a) * S(I_o)``, clipped to [0, 1]. Two (H, W, 3) -> (H, W, 3)."""
    s_a = shading(anon, sigma_space, sigma_color)
    s_o = shading(orig, sigma_space, sigma_color)
    return np.clip(albedo(anon, s_a) * s_o[..., None], 0.0, 1.0)


def gaussian_pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """``[G^0, ..., G^levels]`` with ``G^0 = image`` and ``G^{k+1} = pyrDown(G^k)``."""
    pyr = [image]
    for _ in range(levels):
        pyr.append(cv2.pyrDown(pyr[-1]))
    return pyr


def laplacian_pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """``[L^0, ..., L^{levels-1}, G^levels]`` with ``L^k = G^k - upsample(G^{k+1})``."""
    g = gaussian_pyramid(image, levels)
    lap = [g[k] - cv2.pyrUp(g[k + 1], dstsize=g[k].shape[1::-1]) for k in range(levels)]
    return lap + [g[-1]]


def collapse(pyramid: list[np.ndarray]) -> np.ndarray:
    """Inverse of :func:`laplacian_pyramid`: ``G^k = L^k + upsample(G^{k+1})`` down to ``G^0``."""
    image = pyramid[-1]
    for lap in reversed(pyramid[:-1]):
        image = lap + cv2.pyrUp(image, dstsize=lap.shape[1::-1])
    return image


def pyramid_blend(anon: np.ndarray, relit: np.ndarray, levels: int = PYRAMID_LEVELS) -> np.ndarray:
    """``I_blend``: ``I_a``'s Laplacian pyramid with its low-frequency band ``G^K`` taken from
    ``I_relight``, collapsed and clipped to [0, 1]. Two (H, W, 3) -> (H, W, 3)."""
    lap = laplacian_pyramid(anon, levels)
    lap[-1] = gaussian_pyramid(relit, levels)[-1]
    return np.clip(collapse(lap), 0.0, 1.0)


def color_stats(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(2, 2) mean and standard deviation of Cr (row 0) and Cb (row 1) of an (H, W, 3) [0, 1]
    image over ``mask > 0`` (H, W); NaN where the mask is empty."""
    sel = mask > 0
    if not sel.any():
        return np.full((2, 2), np.nan, np.float32)
    ycc = cv2.cvtColor(image.astype(np.float32), cv2.COLOR_RGB2YCrCb)[sel]
    return np.stack([ycc[:, 1:].mean(0), ycc[:, 1:].std(0)], 1)


class StatsFilter:
    """Exponential smoothing of the reference colour statistics along a video track:
    ``m_t = a m_{t-1} + (1 - a) x_t`` with ``a = exp(-1 / (rate * tau))`` for frames at ``rate``
    Hz and a time constant ``tau`` seconds, so the transferred skin tone does not flicker while
    following real changes of light within a fraction of a second."""

    def __init__(self, rate: float, tau: float = 0.25):
        self.a = float(np.exp(-1.0 / (rate * tau)))
        self.state: np.ndarray | None = None

    def __call__(self, stats: np.ndarray) -> np.ndarray:
        if np.isnan(stats).any():
            return stats if self.state is None else self.state
        self.state = stats if self.state is None else self.a * self.state + (1 - self.a) * stats
        return self.state


def color_transfer(image: np.ndarray, reference: np.ndarray, mask: np.ndarray,
                   stats: np.ndarray | None = None) -> np.ndarray:
    """Cb/Cr statistics transfer: ``I_f^c = sigma_r^c / sigma_t^c * (I^c - mu_t^c) + mu_r^c``
    for c in {Cb, Cr}, statistics over ``mask > 0``; Y unchanged; result clipped to [0, 1].

    (H, W, 3) image and reference, (H, W) mask -> (H, W, 3). ``stats``: the reference's
    (:func:`color_stats`) when given, e.g. smoothed over time.
    """
    sel = mask > 0
    if not sel.any():
        return image.copy()
    ref = color_stats(reference, mask) if stats is None else stats
    own = color_stats(image, mask)
    t = cv2.cvtColor(image.astype(np.float32), cv2.COLOR_RGB2YCrCb)
    for c in (1, 2):  # OpenCV's order is Y, Cr, Cb
        (mu_t, sd_t), (mu_r, sd_r) = own[c - 1], ref[c - 1]
        t[..., c] = (sd_r / max(sd_t, 1e-6)) * (t[..., c] - mu_t) + mu_r
    return np.clip(cv2.cvtColor(t, cv2.COLOR_YCrCb2RGB), 0.0, 1.0)


def laplacian_variance(luma: np.ndarray, region: np.ndarray) -> np.floating:
    """Fine detail: the variance of the 4-neighbour Laplacian of an (N, N) float32 luma image
    over its (N, N) bool ``region``; :func:`detail` and the metrics suite's sharpness
    (:func:`~.metrics.lighting.sharpness_ratio`) both measure it."""
    return np.var(cv2.Laplacian(luma, cv2.CV_32F)[region])


def _region_at(mask: np.ndarray, side: int) -> np.ndarray:
    """(side, side) bool: an (S, S) mask's ``> 0`` region seen at ``side`` px (area resize)."""
    return cv2.resize(mask.astype(np.float32), (side, side), interpolation=cv2.INTER_AREA) > 0.5


def _detail_at(image: np.ndarray, region: np.ndarray) -> float:
    """:func:`detail` of an (S, S, 3) [0, 1] crop over a ``region`` already at its side."""
    if not region.any():
        return 0.0
    side = region.shape[0]
    small = cv2.resize(gray(image) * 255.0, (side, side), interpolation=cv2.INTER_AREA)
    return float(laplacian_variance(small, region))


def detail(image: np.ndarray, mask: np.ndarray, side: int) -> float:
    """How much fine detail an (S, S, 3) [0, 1] crop holds over its (S, S) ``mask > 0``, seen at
    ``side`` x ``side`` px (the crop resized by area): the :func:`laplacian_variance` of its
    luma (0-255 units) there, as the metrics suite's sharpness
    (:func:`~.metrics.lighting.sharpness_ratio`)."""
    return _detail_at(image, _region_at(mask, side))


def match_detail(anon: np.ndarray, orig: np.ndarray, mask: np.ndarray, scale: float = 1.0,
                 most: float = MOST_DETAIL) -> np.ndarray:
    """``I_a`` blurred by a Gaussian of the least sigma that leaves it at most ``most`` times the
    original's :func:`detail` over ``mask``, both seen at the face's own resolution, N = S /
    ``scale`` px (``scale``: the crop's pixels per image pixel); ``I_a`` itself where it holds no
    more than that. An original crop upsampled from a small face (``scale`` > 1) has lost detail
    to its bilinear interpolation, so ``I_a`` is compared after the same round trip (area
    resize to N, bilinear back to S). Sigma is found at N px, doubled from 0.5 px (up to N / 8)
    until it is enough, then bisected to :data:`SIGMA_STEP`, and applied at S. Two (S, S, 3)
    [0, 1] crops and an (S, S) mask -> (S, S, 3)."""
    size = anon.shape[0]
    side = min(size, max(8, int(round(size / max(scale, 1.0)))))
    small = cv2.resize(anon, (side, side), interpolation=cv2.INTER_AREA)
    region = _region_at(mask, side)  # once, for every sigma tried

    def seen(sigma: float) -> float:  # I_a's detail, blurred by sigma px at N px
        blurred = cv2.GaussianBlur(small, (0, 0), sigma) if sigma > 0 else small
        return _detail_at(cv2.resize(blurred, (size, size), interpolation=cv2.INTER_LINEAR),
                          region)

    limit = most * _detail_at(orig, region)
    if seen(0.0) <= limit:
        return anon
    low, high = 0.0, 0.5
    while seen(high) > limit and high < side / 8:  # double it until it is enough, then bisect
        low, high = high, 2 * high
    while high - low > SIGMA_STEP:
        sigma = (low + high) / 2
        if seen(sigma) > limit:
            low = sigma
        else:
            high = sigma
    return cv2.GaussianBlur(anon, (0, 0), high * size / side)


def postprocess(
    anon: np.ndarray,
    orig: np.ndarray,
    mask: np.ndarray,
    settings: PhotometricSettings = PhotometricSettings(),
    stats: np.ndarray | None = None,
    scale: float = 1.0,
) -> np.ndarray:
    """``I_f = D(C(blend(I_a, relight(I_a, I_o)), I_o), I_o)`` with each step optional.

    With ``pyramid`` off, the relit image is used as it is; with ``relight`` off, the pyramid
    step is skipped too (it has nothing to take the low band from). ``settings`` are for a
    :data:`REFERENCE_CROP` crop: on an S px crop ``pyramid`` adds ``round(log2(S / 128))``
    levels, so the band taken from ``I_relight`` is as coarse relative to the face as at 128 px.
    Only that band of ``I_relight`` is used, so on a larger crop it is computed on the crop
    resized to 128 px (area) and resized back (bilinear): the same low band at a fifth of the
    bilateral filters' cost on LFW's 192-288 px crops. Without the pyramid, ``I_relight`` is
    computed at full size with ``sigma_space`` multiplied by S / 128.
    ``stats``: the original's colour statistics to transfer (:func:`color_stats`, e.g.
    smoothed along a video track by :class:`StatsFilter`); by default measured on ``orig``.
    ``D`` is :func:`match_detail` with ``settings.most_detail`` (skipped for None) and the
    crop's ``scale`` (crop pixels per image pixel).
    uint8 or float (H, W, 3) crops and an (H, W) face mask -> uint8 (H, W, 3).
    """
    a = _unit(anon)
    o = _unit(orig)
    if settings.relight:
        size = a.shape[1::-1]
        zoom = a.shape[0] / REFERENCE_CROP
        if settings.pyramid:
            levels = max(1, settings.levels + int(round(np.log2(zoom))))
            if zoom > 1:
                small = (REFERENCE_CROP, REFERENCE_CROP)
                relit = cv2.resize(relight(cv2.resize(a, small, interpolation=cv2.INTER_AREA),
                                           cv2.resize(o, small, interpolation=cv2.INTER_AREA),
                                           settings.sigma_space, settings.sigma_color),
                                   size, interpolation=cv2.INTER_LINEAR)
            else:
                relit = relight(a, o, settings.sigma_space * zoom, settings.sigma_color)
            a = pyramid_blend(a, relit, levels)
        else:
            a = relight(a, o, settings.sigma_space * zoom, settings.sigma_color)
    if settings.color_transfer:
        a = color_transfer(a, o, mask, stats)
    if settings.most_detail is not None:
        a = match_detail(a, o, mask, scale, settings.most_detail)
    return np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)


def _unit(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    return image.astype(np.float32)
