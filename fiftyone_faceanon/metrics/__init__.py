"""Metrics suite (paper Table I): how well an anonymization worked, per face and per dataset.

Public API (formulas and reference checks in ``docs/metrics.md``):

- :class:`Evaluator` — loads the identity judges, the emotion model and the detector settings
  once; ``.evaluate_pair(orig, anon, faces=None)`` / ``.evaluate_batch(pairs)`` ->
  :class:`PairResult` (``.faces``: one record ``{metric: value}`` per original face);
  ``.dataset_metrics(results)`` -> ``fid_facenet``, ``kid_facenet``; ``.unavailable``
  ``{metric: reason}``.
- :func:`evaluate_pair` — the same with a process-wide default evaluator -> ``(records,
  unavailable)``.
- :func:`evaluate_files` — ``(rel, original path, anonymized path)`` triples, in batches and
  optionally in a pool of processes -> ``(rel, faces_from, PairResult | None, error | None)``
  each (what :func:`evaluate_dirs` and ``fiftyone_api.evaluate_samples`` run on).
- :func:`evaluate_dirs` — two folders paired by relative path -> the ``faceanon evaluate`` report.
- Videos: :func:`.video.evaluate_video` — an (original, anonymized) video pair with the
  anonymized one's private record -> a :class:`PairResult` with ``video`` (the suite on every
  ``frame_step``-th frame, per video mean and worst frame, and the temporal metrics of
  :mod:`.temporal`: leaked frames, unreplaced faces, identity stability, jitter); the two
  functions above run it on the videos they are given.
- :func:`summarize` / :func:`worst_face` — ``{metric: {"mean", "std", "n"}}`` over face records;
  a sample's worst value per metric.
- The metric functions themselves: :mod:`.geometry`, :mod:`.lighting`, :mod:`.colour`,
  :mod:`.realism`, :mod:`.detection`; judges in :mod:`.identity`, emotions in :mod:`.emotion`.

Metric names: ``detected``, ``reid_facenet_casia``, ``reid_dlib``, ``reid_rate_facenet_casia``,
``reid_rate_dlib``, ``reid_far_<judge>``, ``reid_found_<judge>``, ``reid_far_found_<judge>``,
``landmark_nme_68``, ``landmark_nme_51``, ``emotion_match``, ``si_mse``,
``si_l2``, ``delta_l``, ``delta_c``, ``delta_e2000``, ``fid_facenet``; also ``emotion_l1``,
``mse_l``, ``mse_ab``, ``kid_facenet``, and ``reid_facenet_vggface2`` / ``fid_inception`` where
their weights are present.
"""

from .evaluate import (Evaluator, PairResult, default_evaluator, evaluate_dirs, evaluate_files,
                       evaluate_pair)
from .summary import PER_DATASET, PER_FACE, summarize, worst_face

__all__ = [
    "Evaluator", "PairResult", "default_evaluator", "evaluate_dirs", "evaluate_files",
    "evaluate_pair",
    "PER_DATASET", "PER_FACE", "summarize", "worst_face",
]
