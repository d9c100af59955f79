"""MediaPipe's iris network (``fiftyone_faceanon.iris``) on the bank's synthetic donors."""

import numpy as np
import pytest
from skimage.color import rgb2lab

from fiftyone_faceanon import faces as F
from fiftyone_faceanon.donors import load_bank
from fiftyone_faceanon.iris import RING, iris_circles, light_eyes

#: dlib's eye points 36-47 of a face seen in a mirror: its eyes change sides, each outer corner
#: stays outer.
MIRRORED_EYES = [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
#: Donors of the shipped bank and their eyes by eye: a pale blue, a blue-grey, a dark brown and
#: a near-black pair.
BLUE = ("synthetic_faces/sfhq/SFHQ_variability_ethnicity.jpg#r5c3",
        "synthetic_faces/sfhq/SFHQ_variability_expression.jpg#r4c1")
DARK = ("synthetic_faces/sfhq/SFHQ_sample_3x6.jpg#r0c2",
        "synthetic_faces/sfhq_t2i/textual_search_1_age_male_top_8_matches.jpg#r0c1")


@pytest.fixture(scope="module")
def bank():
    return load_bank()


def test_each_iris_lies_inside_its_eye(bank):
    """On 40 donors spread over the bank, each circle's centre lies between its eye's corners
    and lids, and its radius is a fifth of the eye's width or so (an iris is about 12 mm
    across, an eye about 30 mm wide)."""
    for i in range(0, len(bank), 19):
        crop, lms = bank.image(i), bank.landmarks[i]
        for (x, y, r), eye in zip(iris_circles(crop, lms), (F.RIGHT_EYE, F.LEFT_EYE)):
            pts = lms[eye]
            width = np.ptp(pts[:, 0])
            assert pts[:, 0].min() < x < pts[:, 0].max()
            assert pts[:, 1].min() - 0.15 * width < y < pts[:, 1].max() + 0.15 * width
            assert 0.12 * width < r < 0.35 * width


def test_a_mirrored_face_gives_mirrored_irises(bank):
    """The network reads the subject's right eye mirrored into its left eye's view: the same
    face flipped left to right gives the same circles, flipped, within half a pixel."""
    crop, lms = bank.image(7), bank.landmarks[7].astype(np.float64)
    side = crop.shape[1]
    mirrored = lms.copy()
    mirrored[36:48] = lms[MIRRORED_EYES] * (-1, 1) + (side - 1, 0)
    circles = iris_circles(crop, lms)
    flipped = iris_circles(np.ascontiguousarray(crop[:, ::-1]), mirrored)[::-1]
    np.testing.assert_allclose(flipped[:, 0], side - 1 - circles[:, 0], atol=0.5)
    np.testing.assert_allclose(flipped[:, 1:], circles[:, 1:], atol=0.5)


def test_light_eyes_is_the_ring_s_median_lightness_less_twice_its_yellowness(bank):
    """Against scikit-image's CIELAB over the same pixels: both irises' :data:`RING` inside the
    eye polygons."""
    for i in (0, 269, 432):
        crop, lms = bank.image(i), bank.landmarks[i]
        circles = iris_circles(crop, lms)
        side = crop.shape[0]
        yy, xx = np.mgrid[:side, :side]
        ring = np.zeros((side, side), bool)
        for (x, y, r), eye in zip(circles, (F.RIGHT_EYE, F.LEFT_EYE)):
            d = np.hypot(xx - x, yy - y)
            ring |= (d >= RING[0] * r) & (d <= RING[1] * r) & F.polygon_mask(lms[eye], side)
        lab = rgb2lab(crop)[ring]
        expected = np.median(lab[:, 0]) - 2 * np.median(lab[:, 2])
        assert light_eyes(crop, lms, circles) == pytest.approx(expected, abs=0.5)


def test_blue_eyes_read_lighter_than_brown_ones(bank):
    """The bank stores each donor's reading (``attributes["eyes"]``, as ``light_eyes`` gives
    it): blue eyes read over 50, dark ones under 25, more than ``EYES_FAR`` apart."""
    from fiftyone_faceanon.anonymizers.donor import EYES_FAR

    eyes = bank.attributes["eyes"]
    blue = [eyes[bank.position[d]] for d in BLUE]
    dark = [eyes[bank.position[d]] for d in DARK]
    assert min(blue) > 50 and max(dark) < 25 and min(blue) - max(dark) > EYES_FAR
    i = bank.position[BLUE[0]]
    assert light_eyes(bank.image(i), bank.landmarks[i]) == pytest.approx(eyes[i], abs=1e-3)
