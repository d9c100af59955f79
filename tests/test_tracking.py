"""Tracking faces through frames (fiftyone_faceanon.tracking), on the real detector and
landmark model over a camera panning across the group photo."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from scipy.signal import lfilter

from fiftyone_faceanon import faces as F
from fiftyone_faceanon.images import load_image
from fiftyone_faceanon.tracking import (TrackSettings, detected_share, one_euro, smooth_track,
                                        track_faces)
from fiftyone_faceanon.video import DOUBTFUL


def test_one_euro_without_speed_term_is_a_first_order_low_pass():
    """beta = 0: the filter is y_t = a x_t + (1 - a) y_{t-1} with a = 1 / (1 + rate / (2 pi
    f_c)), checked against scipy's lfilter."""
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.normal(size=(200, 3)), 0)
    rate, cutoff = 30.0, 2.0
    a = 1 / (1 + rate / (2 * np.pi * cutoff))
    reference = np.stack([lfilter([a], [1, a - 1], c, zi=[(1 - a) * c[0]])[0] for c in x.T], 1)
    np.testing.assert_allclose(one_euro(x, rate, cutoff, beta=0.0), reference, atol=1e-9)


def test_one_euro_smooths_noise_and_follows_fast_motion():
    rng = np.random.default_rng(1)
    t = np.arange(300) / 30.0
    still = 5 + rng.normal(0, 0.1, (300, 1))
    assert np.diff(one_euro(still, 30.0), axis=0).std() < 0.3 * np.diff(still, axis=0).std()
    ramp = 20.0 * t[:, None]  # 20 units/s: the speed term opens the filter
    lag_adaptive = np.abs(one_euro(ramp, 30.0, beta=0.5) - ramp)[-1, 0]
    lag_fixed = np.abs(one_euro(ramp, 30.0, beta=0.0) - ramp)[-1, 0]
    assert lag_adaptive < 0.25 * lag_fixed


@pytest.fixture(scope="module")
def pan(fixtures_dir):
    """30 frames of a 400 x 300 window moving right 6 px per frame over the group photo, and
    MTCNN's detections on every frame."""
    photo = load_image(fixtures_dir / "group" / "insightface_t1.jpg").rgb
    frames = [np.ascontiguousarray(photo[40:340, 6 * t: 6 * t + 400]) for t in range(30)]
    detections = [F.detect_boxes([f], "mtcnn", 0.9, 20, "cpu")[0] for f in frames]
    return frames, detections


def _covered(tracks, detections) -> list[tuple[int, int]]:
    """(frame, detection) pairs that no track's face covers (IoU >= 0.3)."""
    missed = []
    for t, (boxes, _) in enumerate(detections):
        have = np.array([tr.faces[t].box for tr in tracks if t in tr.faces]).reshape(-1, 4)
        missed += [(t, d) for d, b in enumerate(boxes)
                   if not len(have) or F.box_iou(b[None], have).max() < 0.3]
    return missed


@pytest.mark.slow
@pytest.mark.parametrize("every", [1, 5])
def test_every_detected_face_is_in_one_track(pan, every):
    frames, detections = pan
    by_frame = {id(f): d for f, d in zip(frames, detections)}
    tracks = track_faces(frames, lambda f: by_frame[id(f)], TrackSettings(detect_every=every))
    assert _covered(tracks, detections) == []
    # one track per person: as many tracks as faces ever detected in one frame, give or take a
    # face that enters or leaves at the border
    assert max(len(b) for b, _ in detections) <= len(tracks) <= max(len(b) for b, _ in
                                                                     detections) + 2
    assert [tr.id for tr in tracks] == sorted(tr.id for tr in tracks)
    for tr in tracks:  # contiguous: a face in every frame from its first to its last
        assert sorted(tr.faces) == list(range(tr.first, tr.last + 1))


def _same(a, b) -> bool:
    return [(tr.id, sorted(tr.faces)) for tr in a] == [(tr.id, sorted(tr.faces)) for tr in b] \
        and all(np.array_equal(x.faces[t].landmarks, y.faces[t].landmarks)
                for x, y in zip(a, b) for t in x.faces)


@pytest.mark.slow
@pytest.mark.parametrize("threads", [1, 3])
def test_detecting_ahead_in_threads_gives_the_same_tracks(pan, threads):
    frames, detections = pan
    by_frame = {id(f): d for f, d in zip(frames, detections)}
    detect = lambda f: by_frame[id(f)]  # noqa: E731
    alone = track_faces(frames, detect, TrackSettings(detect_every=5))
    with ThreadPoolExecutor(threads) as pool:
        assert _same(track_faces(frames, detect, TrackSettings(detect_every=5), pool=pool,
                                 ahead=threads), alone)


@pytest.mark.slow
def test_a_detection_inside_a_face_starts_no_track(pan):
    """Each face also "found" as a box of a third its size over its eye (as MTCNN finds on a
    profile), listed before the face itself: the tracks are those of the real detections."""
    frames, detections = pan
    parted = []
    for boxes, scores in detections:
        w = (boxes[:, 2:] - boxes[:, :2]) / 3
        parts = np.concatenate([boxes[:, :2] + 0.2 * w, boxes[:, :2] + 1.2 * w], 1)
        parted.append((np.concatenate([parts, boxes]), np.concatenate([scores, scores])))
    by_frame = {id(f): d for f, d in zip(frames, parted)}
    real = {id(f): d for f, d in zip(frames, detections)}
    for every in (1, 5):
        settings = TrackSettings(detect_every=every)
        assert _same(track_faces(frames, lambda f: by_frame[id(f)], settings),
                     track_faces(frames, lambda f: real[id(f)], settings))


@pytest.mark.slow
def test_a_detector_that_blinks_leaves_no_frame_uncovered(pan):
    """The real detections with one face removed from frames 10-14 (the detector missing it):
    with detection on every frame the tracker still places that face on those frames."""
    frames, detections = pan
    target = detections[10][0][0]
    blinked = []
    for t, (boxes, scores) in enumerate(detections):
        if 10 <= t <= 14 and len(boxes):
            keep = F.box_iou(target[None], boxes)[0] < 0.3
            boxes, scores = boxes[keep], scores[keep]
        blinked.append((boxes, scores))
    by_frame = {id(f): d for f, d in zip(frames, blinked)}
    tracks = track_faces(frames, lambda f: by_frame[id(f)], TrackSettings(detect_every=1))
    assert _covered(tracks, detections) == []  # covered against the full detections
    owner = [tr for tr in tracks if 9 in tr.faces
             and F.box_iou(tr.faces[9].box[None], detections[9][0]).max() >= 0.3
             and F.box_iou(tr.faces[9].box[None], target[None])[0, 0] > 0.2]
    assert len(owner) == 1 and all(t in owner[0].faces for t in range(9, 16))
    assert {owner[0].faces[t].source for t in range(10, 15)} <= {"tracked", "interpolated"}


@pytest.mark.slow
def test_a_false_face_found_once_is_doubtful(pan):
    """The real detections and, on frame 20 only, a "face" on the shirt (as MTCNN finds one on
    a hand or in hair): the tracker follows it back and on through the other frames, but the
    detector found it on 1 of the 6 detection frames of its life, in view on all; the real face
    on all of them."""
    frames, detections = pan
    false = np.array([[150.0, 220.0, 190.0, 270.0]])
    seen = [(np.concatenate([b, false]), np.concatenate([s, [0.95]])) if t == 20 else (b, s)
            for t, (b, s) in enumerate(detections)]
    by_frame = {id(f): d for f, d in zip(frames, seen)}
    tracks = track_faces(frames, lambda f: by_frame[id(f)], TrackSettings(detect_every=5))
    (shirt,) = [tr for tr in tracks if F.box_iou(tr.faces[20].box[None], false)[0, 0] > 0.5]
    share = detected_share(shirt, 5, frames[0].shape)
    assert len(shirt.faces) > 20 and share == pytest.approx(1 / 6) and share < DOUBTFUL
    assert all(detected_share(tr, 5, frames[0].shape) == 1.0 for tr in tracks if tr is not shirt)


@pytest.mark.slow
def test_smoothing_reduces_jitter_without_lag(pan):
    frames, detections = pan
    by_frame = {id(f): d for f, d in zip(frames, detections)}
    tracks = track_faces(frames, lambda f: by_frame[id(f)], TrackSettings(detect_every=1))
    longest = max(tracks, key=lambda tr: len(tr.faces))
    smooth = smooth_track(longest, 25.0)
    raw = np.stack([longest.faces[t].landmarks for t in sorted(longest.faces)])
    out = np.stack([smooth.faces[t].landmarks for t in sorted(smooth.faces)])
    # the camera pans at constant speed: jitter is the second difference
    assert np.abs(np.diff(out, 2, axis=0)).mean() < np.abs(np.diff(raw, 2, axis=0)).mean()
    iod = np.linalg.norm(raw[:, 36] - raw[:, 45], axis=1).mean()
    assert np.abs(out - raw).mean() < 0.03 * iod  # no lag behind the pan
