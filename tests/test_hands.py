"""Hands over faces: MediaPipe Hands' networks find them, the pipeline keeps them in front.

Real photos: an LFW DevTest hammer thrower drinking from a bottle that his hand holds over his
mouth and chin (Adrian_Annus_0001), the Big Bang Theory cast on a sofa with their hands in their
laps (``faceapi/bbt1.jpg``) and the FFHQ portraits, none with a hand in the picture.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import need_shared, read_rgb
from fiftyone_faceanon import faces as F
from fiftyone_faceanon.hands import find_hands, hand_mask, palm_anchors
from fiftyone_faceanon.pipeline import Pipeline, Settings

DRINKING = "Adrian_Annus/Adrian_Annus_0001.jpg"


@pytest.fixture(scope="module")
def drinking() -> np.ndarray:
    return read_rgb(need_shared("lfw") / "images_deepfunneled" / DRINKING)


def test_palm_anchors_tile_both_grids():
    anchors = palm_anchors()
    assert anchors.shape == (2016, 2)
    np.testing.assert_allclose(anchors[:2], [[1 / 48, 1 / 48]] * 2)  # 24x24 grid, 2 per cell
    np.testing.assert_allclose(anchors[1152:1158], [[1 / 24, 1 / 24]] * 6)  # 12x12, 6 per cell
    np.testing.assert_allclose(anchors[-1], [23 / 24, 23 / 24])


def test_a_hand_over_the_mouth_keeps_its_original_pixels(drinking):
    """The fingers over the mouth stay bit for bit in front of the new face; without occluder
    detection the donor's mouth and chin are painted over them."""
    (hand,) = find_hands(drinking)
    result = Pipeline(Settings()).anonymize(drinking, key=DRINKING)
    (face,), (record,) = result.faces, result.records
    assert record.status == "verified"
    size = face.crop.size
    region = F.face_region(face.crop.to_crop(face.landmarks), size)
    on_face = F.paste_faces(np.zeros_like(drinking), [face], [np.full((size, size, 3), 255,
                            np.uint8)], [region]).any(2)
    inner = cv2.erode(hand_mask(hand, drinking.shape[:2]).astype(np.uint8),
                      np.ones((5, 5), np.uint8)).astype(bool)
    covered = inner & on_face
    assert covered.sum() > 1500, covered.sum()
    assert (result.image[covered] == drinking[covered]).all()
    # the rest of the face is replaced ...
    skin = on_face & ~cv2.dilate(inner.astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool)
    assert np.abs(result.image[skin].astype(int) - drinking[skin]).mean() > 10
    # ... and without occluders the hand is painted over
    plain = Pipeline(Settings(occluders=False)).anonymize(drinking, key=DRINKING).image
    assert (np.abs(plain[covered].astype(int) - drinking[covered]).max(1) > 8).mean() > 0.5


def test_hand_landmarks_turn_with_the_image(drinking):
    """The hand region is rotated upright before the landmark network sees it: on the photo
    turned a quarter the landmarks are the same points of the hand, turned."""
    (hand,) = find_hands(drinking)
    (turned,) = find_hands(np.ascontiguousarray(np.rot90(drinking)))  # counter-clockwise
    width = drinking.shape[1]
    back = np.stack([width - 1 - turned[:, 1], turned[:, 0]], 1)
    size = np.ptp(hand, axis=0).max()
    assert np.linalg.norm(back - hand, axis=1).mean() < 0.05 * size


def test_hands_are_found_in_laps_and_not_on_faces(fixtures_dir):
    group = read_rgb(fixtures_dir / "faceapi/bbt1.jpg")
    hands = find_hands(group)
    assert len(hands) >= 4
    faces = F.find_faces(group)
    assert len(faces) == 4
    for face in faces:  # every hand is below every face's chin
        assert all(h[:, 1].min() > face.landmarks[8, 1] for h in hands)
    for path in sorted((fixtures_dir / "ffhq10").glob("*.png")):
        assert find_hands(read_rgb(path)) == [], path.name
