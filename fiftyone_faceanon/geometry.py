"""Identity-neutral geometry: a shape model that separates who a face is from how it looks now.

The 68 dlib landmarks carry pose, expression *and* identity (face proportions, the jaw, the
nose). Warping a new face onto all of them keeps the original's proportions, which the identity
judges recognise. This module learns, on the training split (LFW ``peopleDevTrain.txt``: many
people with several photos), which directions of the Procrustes-aligned shape vary much *between*
people and little *within* a person, and moves a face's component along them towards the mean
shape (or a donor's) while keeping the rest (pose, expression, landmark noise).

Shapes are (68, 2) float arrays in pixels, ``x`` first; aligned shapes are flattened to (136,).

Model (Fisher's discriminant directions). With the aligned shapes ``x`` of person ``p``,
``S_w = sum_p sum_i (x_pi - mu_p)(x_pi - mu_p)^T / n_w`` (within-person scatter) and
``S_b = sum_p n_p (mu_p - mu)(mu_p - mu)^T / n`` (between-person scatter), the identity
directions are the generalized eigenvectors ``S_b v = lambda S_w v`` with the largest ``lambda``.
In the ``S_w``-whitened space ``W = S_w^{-1/2}`` they are orthonormal columns ``U`` (136, K), and
the identity component of a shape is the oblique projection

    ``id(x) = P (x - mu)``,  ``P = S_w^{1/2} U U^T S_w^{-1/2}``.

Neutralizing with strength ``s`` in [0, 1] moves it towards a target identity ``t`` (the mean:
``t = 0``; a donor: ``t = id(x_donor)``):

    ``x' = x - s (id(x) - t)``

then maps ``x'`` back into the image with the inverse of ``x``'s similarity alignment, so
``s = 0`` returns the original landmarks exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .weights import model_path

SHAPE_MODEL = "shape_identity.npz"


@dataclass(frozen=True)
class Similarity:
    """``aligned = scale * (points - centre) @ rotation + offset``: image px -> model frame, in
    D = 2 (landmarks) or 3 (a face mesh) dimensions."""

    scale: float
    rotation: np.ndarray  # (D, D)
    centre: np.ndarray  # (D,)
    offset: np.ndarray  # (D,)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """(N, D) image px -> (N, D) model frame."""
        return self.scale * (points - self.centre) @ self.rotation + self.offset

    def invert(self, aligned: np.ndarray) -> np.ndarray:
        """(N, D) model frame -> (N, D) image px."""
        return (aligned - self.offset) @ self.rotation.T / self.scale + self.centre


def fit_similarity(points: np.ndarray, reference: np.ndarray) -> Similarity:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) taking
    ``points`` (N, D) onto ``reference`` (N, D): Umeyama's solution."""
    c = points.mean(0)
    r0 = reference.mean(0)
    a, b = points - c, reference - r0
    u, sig, vt = np.linalg.svd(a.T @ b)
    keep = np.ones(points.shape[1])
    keep[-1] = np.sign(np.linalg.det(u @ vt))
    rotation = u @ np.diag(keep) @ vt
    scale = float((sig * keep).sum() / max((a**2).sum(), 1e-12))
    return Similarity(scale, rotation, c, r0)


def procrustes_mean(shapes: np.ndarray, iterations: int = 5) -> np.ndarray:
    """Generalised Procrustes: (N, 68, 2) shapes -> their (68, 2) mean after similarity
    alignment, centred at 0 and scaled like the first shape."""
    ref = shapes[0] - shapes[0].mean(0)
    for _ in range(iterations):
        mean = np.mean([fit_similarity(s, ref).apply(s) for s in shapes], 0)
        mean -= mean.mean(0)
        ref = mean / np.linalg.norm(mean) * np.linalg.norm(ref)
    return ref


@dataclass(frozen=True)
class ShapeModel:
    """``mean`` (68, 2) model frame; ``project`` (136, 136) the oblique projector ``P`` onto the
    identity directions; ``ratios`` (K,) their between/within variance ratios ``lambda``."""

    mean: np.ndarray
    project: np.ndarray
    ratios: np.ndarray

    def align(self, landmarks: np.ndarray) -> tuple[np.ndarray, Similarity]:
        """(68, 2) image px -> (136,) aligned shape minus the mean, and the alignment."""
        sim = fit_similarity(landmarks, self.mean)
        return (sim.apply(landmarks) - self.mean).reshape(-1), sim

    def identity(self, landmarks: np.ndarray) -> np.ndarray:
        """The identity component ``id(x) = P (x - mu)`` of a (68, 2) shape, (136,)."""
        return self.project @ self.align(landmarks)[0]

    def neutralize(
        self, landmarks: np.ndarray, strength: float, target: np.ndarray | None = None
    ) -> np.ndarray:
        """``x' = x - s (id(x) - t)`` in the model frame, back in image px: (68, 2) -> (68, 2).

        ``target`` is an identity component (136,) such as :meth:`identity` of a donor's
        landmarks; ``None`` is the mean shape's (0). ``strength`` 0 returns ``landmarks``.
        """
        if strength == 0:
            return np.asarray(landmarks, np.float64).copy()
        x, sim = self.align(landmarks)
        t = np.zeros_like(x) if target is None else target
        moved = x - strength * (self.project @ x - t)
        return sim.invert(moved.reshape(68, 2) + self.mean)


def fit_shape_model(
    shapes: np.ndarray, people: np.ndarray, min_ratio: float = 1.0, ridge: float = 1e-3
) -> ShapeModel:
    """Learn the identity directions from (N, 68, 2) shapes of ``people`` (N,) labels.

    Only people with two or more shapes enter ``S_w``; every shape enters ``mu`` and ``S_b``.
    ``ridge`` (relative to the mean eigenvalue) regularises ``S_w``, which is singular in the
    four similarity directions removed by the alignment. Directions with ``lambda >= min_ratio``
    (more spread between people than within one) are kept.
    """
    mean = procrustes_mean(shapes)
    x = np.stack([fit_similarity(s, mean).apply(s) - mean for s in shapes]).reshape(len(shapes), -1)
    labels, inverse, counts = np.unique(people, return_inverse=True, return_counts=True)
    means = np.zeros((len(labels), x.shape[1]))
    np.add.at(means, inverse, x)
    means /= counts[:, None]
    multi = counts[inverse] >= 2
    within = x[multi] - means[inverse[multi]]
    s_w = within.T @ within / max(len(within) - int((counts >= 2).sum()), 1)
    centred = means - x.mean(0)
    s_b = (centred * counts[:, None]).T @ centred / len(x)
    s_w += ridge * np.trace(s_w) / len(s_w) * np.eye(len(s_w))
    evals, evecs = np.linalg.eigh(s_w)
    half = evecs @ np.diag(np.sqrt(evals)) @ evecs.T
    inv_half = evecs @ np.diag(1 / np.sqrt(evals)) @ evecs.T
    ratios, u = np.linalg.eigh(inv_half @ s_b @ inv_half)
    order = np.argsort(ratios)[::-1]
    ratios, u = ratios[order], u[:, order]
    keep = ratios >= min_ratio
    u = u[:, keep]
    return ShapeModel(mean, half @ u @ u.T @ inv_half, ratios[keep])


def save_shape_model(model: ShapeModel, path: Path) -> None:
    np.savez_compressed(path, mean=model.mean, project=model.project, ratios=model.ratios)


def load_shape_model(path: Path | None = None) -> ShapeModel:
    """The shipped ``models/shape_identity.npz`` (sha256-checked) or a model at ``path``."""
    with np.load(path or model_path(SHAPE_MODEL)) as data:
        return ShapeModel(data["mean"], data["project"], data["ratios"])


def spread(components: np.ndarray, people: np.ndarray) -> tuple[float, float]:
    """(within-person, between-person) mean squared distance of (N, D) components to their
    person's mean and of the person means to the overall mean."""
    labels, inverse = np.unique(people, return_inverse=True)
    means = np.stack([components[inverse == i].mean(0) for i in range(len(labels))])
    within = float(((components - means[inverse]) ** 2).sum(1).mean())
    between = float(((means - components.mean(0)) ** 2).sum(1).mean())
    return within, between
