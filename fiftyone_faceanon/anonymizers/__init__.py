"""Anonymizing backends behind one interface, selectable by name.

>>> from fiftyone_faceanon.anonymizers import create_backend, available_backends
>>> sorted(available_backends())  # doctest: +SKIP
['blur', 'donor', 'dp68', 'ksame', 'mask', 'noise', 'pixelate']
"""

from . import classical, donor, ksame  # noqa: F401  (registers the backends)
from . import dp68  # noqa: F401,E402  (registers dp68; raises BackendUnavailable only when created)
from .base import Anonymizer, BackendUnavailable, available_backends, create_backend, register

DEFAULT_BACKEND = "donor"

__all__ = [
    "Anonymizer",
    "BackendUnavailable",
    "DEFAULT_BACKEND",
    "available_backends",
    "create_backend",
    "register",
]
