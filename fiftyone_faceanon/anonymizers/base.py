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
    """

    name: ClassVar[str]
    photometric: ClassVar[bool] = False
    crop_size: int = 128

    @abc.abstractmethod
    def anonymize(
        self,
        crops: np.ndarray,
        landmarks: np.ndarray,
        regions: np.ndarray,
        rngs: list[np.random.Generator],
    ) -> np.ndarray: ...


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
