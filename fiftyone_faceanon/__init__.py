"""fiftyone_faceanon: replace every face in an image dataset with a generated one while keeping
pose, expression, lighting and skin tone (Celona et al. 2025, section III).

Stages, one module each: :mod:`.faces` (detection, landmarks, crops), :mod:`.anonymizers`
(backends), :mod:`.photometric` (relighting and colour transfer), :mod:`.pipeline` (the core API
that ties them), :mod:`.batch` (files and folders). Adapters: :mod:`.cli`.
"""

__version__ = "0.1.0"
