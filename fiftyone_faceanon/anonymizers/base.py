"""The interface every anonymizing backend implements, and the registry that names them."""

from __future__ import annotations

import abc
from typing import Callable, ClassVar

import numpy as np


class Anonymizer(abc.ABC):
    """Replaces the faces in a batch of square crops.

    ``anonymize`` takes ``crops`` (N, S, S, 3) uint8 with ``S == crop_size``, ``landmarks``
    (N, 68, 2) in crop pixels, ``regions`` (N, S, S) float32 binary face masks and one
    ``numpy.random.Generator`` per face, and returns (N, S, S, 3) uint8. Only pixels inside the
    region matter: the pipeline pastes the result back through a feathered copy of it.

    ``photometric``: whether the paper's relighting and colour transfer apply to this backend's
    output (they do for generated faces; they would undo a blur or a mask).

    ``crop_size``: the side the pipeline crops every face to; ``None`` means each face at its own
    resolution (``faces.crop_size_for``), so a backend with ``None`` gets one face per call.
    ``forehead``: how much forehead the region the pipeline replaces takes (a donor photo's
    forehead is often under its own hair, so the ``donor`` backend takes less).

    A backend that renders donor identities overrides :meth:`read` and :meth:`choose`; the
    pipeline reads each face once and chooses its donor at each try, then moves the
    face's geometry towards the chosen donor's (``geometry.ShapeModel.neutralize``) and passes
    the donors back to :meth:`anonymize`.
    """

    name: ClassVar[str]
    photometric: ClassVar[bool] = False
    crop_size: int | None = 128
    #: how far above the brows the replaced region reaches (``faces.face_region``)
    forehead: ClassVar[float] = 0.3
    #: the :class:`~fiftyone_faceanon.donors.DonorBank` of a backend with donors, else None
    bank = None
    #: whether :meth:`anonymize` renders a turned face through its mesh (``meshes``), so the
    #: pipeline finds the meshes of turned faces (:func:`~fiftyone_faceanon.mesh.turned`)
    renders_meshes: ClassVar[bool] = False
    #: whether the judges will score this backend's faces (``Settings.verify``, set by the
    #: pipeline): where they will, a backend may keep more of how the face looks, since a try
    #: they match is redone
    verified: bool = True

    def read(
        self,
        crop: np.ndarray,
        landmarks: np.ndarray,
        identity: dict[str, np.ndarray] | None = None,
        verified: bool = True,
        mesh: object | None = None,
    ) -> object | None:
        """What :meth:`choose` matches a face's donor on, read once for all its tries off one
        (S, S, 3) crop with (68, 2) crop-px landmarks; ``identity``: the face's judge
        embeddings ({judge: (D,)}), which the pipeline computes for a backend with donors;
        ``verified``: whether the judges will score the result; ``mesh``: a turned face's
        :class:`~fiftyone_faceanon.mesh.Mesh` (a backend that :attr:`renders_meshes`).
        ``None`` for backends without donors."""
        return None

    def choose(
        self,
        face: object | None,
        rng: np.random.Generator,
        rank: int,
        exclude: np.ndarray | None,
        redo: bool = False,
        wide: bool = False,
        last: bool = False,
    ) -> int | None:
        """The donor for a face read by :meth:`read`: the ``rank``-th of this face's seeded
        candidate order, skipping ``exclude`` ((M,) bool over the donors); ``redo``: the face
        is anonymized again to unlink it (it starts at a later rank, and every one of its
        tries is matched as a first try is); ``wide``: the try draws the wide region
        (``pipeline.wide_region``, from ``pipeline.WIDEN_FROM``), which reaches up the
        forehead; ``last``: the face's last try before it fails closed (with verification).
        ``None`` for backends without donors."""
        return None

    def donor_landmarks(self, donor: int) -> np.ndarray:
        """(68, 2) landmarks of a donor, in its own frame."""
        raise NotImplementedError(f"{self.name} has no donors")

    def donor_id(self, donor: int) -> str:
        raise NotImplementedError(f"{self.name} has no donors")

    def facing(self, face: object | None) -> float:
        """The yaw (degrees) towards which the donors of a turned face read by :meth:`read`
        are drawn turned (``Mesh.facing``); 0: each donor as it is."""
        return 0.0

    def donor_mesh(self, donor: int, facing: float = 0.0) -> np.ndarray:
        """(468, 3) face mesh points of a donor, in its own frame, as it is drawn onto a turned
        face whose donors are turned towards ``facing`` (degrees, :meth:`facing`; a backend
        that :attr:`renders_meshes`)."""
        raise NotImplementedError(f"{self.name} renders no meshes")

    @abc.abstractmethod
    def anonymize(
        self,
        crops: np.ndarray,
        landmarks: np.ndarray,
        regions: np.ndarray,
        rngs: list[np.random.Generator],
        donors: list[int | None] | None = None,
        meshes: list | None = None,
    ) -> np.ndarray:
        """The anonymized crops, (N, C, C, 3) uint8 with C the backend's :attr:`crop_size` (S
        where None), of (N, S, S, 3) uint8 ``crops`` with (N, 68, 2)
        crop-px target ``landmarks`` over (N, S, S) ``regions``; ``donors`` from
        :meth:`choose`; ``meshes``, for a backend that :attr:`renders_meshes`: per face its
        target :class:`~fiftyone_faceanon.mesh.Mesh` where it is turned, else None."""


class BackendUnavailable(RuntimeError):
    """A backend that is registered but cannot run here (e.g. its weights are missing)."""


_REGISTRY: dict[str, Callable[..., Anonymizer]] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register(name: str, description: str) -> Callable:
    """Class decorator: make an :class:`Anonymizer` subclass selectable by ``name``."""

    def wrap(cls):
        cls.name = name
        _REGISTRY[name] = cls
        _DESCRIPTIONS[name] = description
        return cls

    return wrap


def available_backends() -> dict[str, str]:
    """``{name: one-line description}`` of every registered backend."""
    return dict(_DESCRIPTIONS)


def create_backend(name: str, **kwargs) -> Anonymizer:
    """An instance of the backend registered as ``name``.

    Raises ``KeyError`` for an unknown name and :class:`BackendUnavailable` when it cannot run.
    """
    if name not in _REGISTRY:
        raise KeyError(f"unknown backend {name!r}; choose one of {sorted(_REGISTRY)}")
    return _REGISTRY[name](**kwargs)
