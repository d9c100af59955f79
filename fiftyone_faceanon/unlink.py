"""Unlinkability across a run: the anonymized faces of one person kept apart from each other.

Verification (:mod:`.verify`) compares each anonymized face with its own original. Two photos of
one person can still be linked to each other once anonymized: their donors are chosen for the
same pose, skin tone, gender, age, beard and glasses, now and then the very same donor, and the
hair and head outline around them stay. On LFW DevTest 500 (default, verified, seed 0)
FaceNet-CASIA linked 8.5% of the pairs of photos of one person at its FAR 1e-3 threshold, and
0.9% of the pairs of different people (docs/benchmarks.md, "Faces of one person kept apart").

After a run, :func:`linked_pairs` finds the pairs of faces of two different images whose
originals a judge matches (one person, or a look-alike) and whose anonymized faces a judge
matches too; a video counts as one image, and each of its tracks as one face, seen on one frame
(:func:`~.batch.track_representatives`). :func:`redo_plan` takes the later face of each pair
(the earlier one where the later one's image cannot be verified again): it is anonymized again
from the try :data:`FROM_TRY` on (the second try's geometry, 0.75; its donor chosen at every try
on the first tries' terms, skin tone and light), with its own donor, the donors of its
look-alikes (:func:`look_alikes`: every face of another image whose original a judge matches,
linked or not) and every donor a judge finds close to its partners' anonymized faces
(:func:`avoided`) ruled out. Without its own donor ruled out, a face that had reached try
:data:`FROM_TRY` was given the same donor at the same try again, byte for byte the same face,
and stayed linked (docs/benchmarks.md, "Linked photos of one person redone until apart").
Avoiding the partners' donors alone let photos of one person redone one after another end on the
same donor (at seed 0, 4 of the 16 same-person pairs FaceNet-CASIA still linked; with it, 0.7%
of the same-person pairs against 1.0%, at the cost of emotion match: docs/benchmarks.md, "Many
photos of one person"). This repeats for up to :data:`ROUNDS` rounds, the pairs found again on
the new faces. An image that a redo would leave unverified keeps what it had
(:func:`~.batch.unlink_run`).

The run keeps both judges' embeddings of every verified face, original and anonymized, in
memory until it ends: about 5 KB a face.
"""

from __future__ import annotations

import numpy as np

#: Rounds of redoing linked faces; a run stops early once no pair is left. Each round after
#: the first mostly catches faces redone in the round before that were given one new donor.
#: On LFW DevTest 500 (seed 0) FaceNet-CASIA's same-person links went from 8.5% to 1.8% after
#: two rounds and 0.9% after six, dlib's from 6.5% to 0.7% and 0.4% (different people: 0.7% and
#: 1.1%), with the same emotion match, NME-51 and colour. With the redone faces' donors chosen
#: on the first tries' terms (skin tone and light: :meth:`~.pipeline.Pipeline._try`), six rounds
#: give 0.6% and 0.4% (different people: 0.6% and 1.0%). With each redone face's own donor
#: ruled out and a settled face's partner redone instead (2026-12-06, seed 0): 0.73% and 0.37%
#: after six rounds, 0.18% and 0.12% after ten (different people: 0.61% and 0.97%); the rounds
#: after the sixth redid 6, 4, 3, 3 and 3 images. Redone from the second try (:data:`FROM_TRY`),
#: ten rounds left 0.55% and 0.06% (different people: 0.55% and 0.92%), fourteen 0.37% and
#: 0.06% (0.56% and 0.92%; rounds of 112, 55, 35, 23, 16, 11, 8, 5, 4, 4, 5, 3, 2 and 2
#: images); docs/benchmarks.md, "Linked photos of one person redone until apart".
ROUNDS = 14
#: The try (0-based) a redone face starts at: the second, geometry 0.75 and the usual region
#: (from the third on, the wide region and geometry 1: :data:`~.pipeline.WIDEN_FROM`). Until
#: 2026-12-06 (stop 55) it was the third. With a redone face's own donor ruled out and ten
#: rounds (LFW DevTest 500), the second still met unlinkability at seeds 1 and 2
#: (FaceNet-CASIA 0.24% and 0.31% of same-person pairs linked, against 0.24% and 0.06% from
#: the third, and 0.71% and 0.69% of pairs of different people), but only just at seed 0
#: (0.55% against 0.55%; 0.18% from the third), hence four more rounds; it gave 0.7-1.6
#: points more emotion match and lower NME-51, Si-MSE and ΔE2000. At stop 47, with two
#: rounds: from the third try 1.8% and 0.7% (FaceNet-CASIA and dlib), from the second 2.8% and
#: 1.3%, from the first (a study script, three rounds) no lower than 3.4% and 2.1%; at stop 50,
#: with six rounds and the expression term (seed 0): from the third try 0.55% and 0.12%
#: (different people: 0.60% and 0.96%), from the second 1.5% and 0.61% (0.59% and 1.0%), with
#: emotion match 57.0% against 55.6% and NME-51 0.047 against 0.048 (docs/benchmarks.md, "Work
#: done once").
FROM_TRY = 1
#: Rows of the similarity matrix computed at a time, so a large run's pairs fit in memory.
BLOCK = 4096


def _matched(embeddings: dict[str, np.ndarray], rows: slice | np.ndarray,
             line: dict[str, float]) -> np.ndarray:
    """(R, N) bool: whether some judge's cosine between each of the ``rows`` of N faces and
    every face is at or above its ``line``; ``embeddings``: ``{judge: (N, D)}`` unit rows."""
    return np.any([e[rows] @ e.T >= line[j] for j, e in embeddings.items()], axis=0)


def linked_pairs(original: dict[str, np.ndarray], anonymized: dict[str, np.ndarray],
                 image: np.ndarray, same: dict[str, float], link: dict[str, float]
                 ) -> np.ndarray:
    """(P, 2) int pairs ``i < j`` of N faces, of different images (``image``: (N,) the image
    each face is in), with ``cos(o_i, o_j) >= same[judge]`` for some judge and ``cos(a_i, a_j)
    >= link[judge]`` for some judge; ``original``, ``anonymized``: ``{judge: (N, D)}`` unit
    embeddings of the original and anonymized faces. Sorted by ``i`` then ``j``."""
    n = len(image)
    pairs = []
    for start in range(0, n, BLOCK):
        rows = slice(start, min(n, start + BLOCK))
        hit = (_matched(original, rows, same) & _matched(anonymized, rows, link)
               & (image[rows, None] != image[None]))
        hit &= np.arange(start, rows.stop)[:, None] < np.arange(n)[None]
        i, k = np.nonzero(hit)
        pairs.append(np.stack([i + start, k], 1))
    return np.concatenate([np.zeros((0, 2), int), *pairs]).astype(int)


def look_alikes(original: dict[str, np.ndarray], image: np.ndarray, same: dict[str, float],
                faces: list[int]) -> dict[int, list[int]]:
    """``{face: others}`` for each of ``faces``: the faces of other images whose originals a
    judge matches to its original (``cos >= same[judge]``; ``original``: ``{judge: (N, D)}``
    unit embeddings, ``image``: (N,) the image each face is in), linked or not, sorted."""
    if not faces:
        return {}
    rows = np.asarray(faces, int)
    matched = _matched(original, rows, same) & (image[rows, None] != image[None])
    return {int(f): np.flatnonzero(m).tolist() for f, m in zip(rows, matched)}


def redo_plan(pairs: np.ndarray, settled: set[int] | frozenset[int] = frozenset()
              ) -> dict[int, list[int]]:
    """``{face: partners}``: the later face ``j`` of each linked pair ``(i, j)``
    (:func:`linked_pairs`), to be anonymized again, and every face it is linked to (either way
    round), sorted. Where ``j`` is ``settled`` (a redo left its image unverified, so it keeps
    its face), the earlier face ``i`` is redone instead; a pair of two settled faces stays."""
    pairs = [(int(i), int(j)) for i, j in pairs]
    plan: dict[int, set[int]] = {i if j in settled else j: set() for i, j in pairs
                                 if i not in settled or j not in settled}
    for i, j in pairs:
        if j in plan:
            plan[j].add(i)
        if i in plan:
            plan[i].add(j)
    return {face: sorted(partners) for face, partners in sorted(plan.items())}


def avoided(partners: dict[str, np.ndarray], donors: list[int | None],
            bank: dict[str, np.ndarray], close: dict[str, float]) -> np.ndarray:
    """(M,) bool over a bank of M donors: the ``donors`` (bank indices, None for no donor) of a
    face and its look-alikes (:func:`look_alikes`), and every donor a judge finds close to one
    of its partners' anonymized faces (``partners``: ``{judge: (K, D)}``; ``bank``: the donors'
    ``{judge: (M, D)}``), at or above ``close[judge]``."""
    out = np.zeros(len(next(iter(bank.values()))), bool)
    out[[d for d in donors if d is not None]] = True
    for j, e in partners.items():
        out |= (e @ bank[j].T >= close[j]).any(0)
    return out
