"""Detection, landmarks and crops on real photos."""

import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest

from conftest import need_shared, read_rgb
from fiftyone_faceanon import faces as F


def inter_ocular_nme(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean point-to-point error over the 68 points / outer-eye-corner distance (36-45)."""
    return float(np.linalg.norm(pred - truth, axis=1).mean() / np.linalg.norm(truth[36] - truth[45]))


def nearest_face(faces, truth):
    centre = truth.mean(0)
    return min(faces, key=lambda f: np.linalg.norm(f.landmarks.mean(0) - centre))


def test_group_photo_has_six_faces(fixtures_dir):
    faces = F.find_faces(read_rgb(fixtures_dir / "group/insightface_t1.jpg"))
    assert len(faces) == 6
    for f in faces:
        assert f.landmarks.shape == (68, 2) and f.score >= 0.9


@pytest.mark.parametrize("any_roll", [False, True])
def test_no_face(fixtures_dir, any_roll):
    assert F.find_faces(read_rgb(fixtures_dir / "faceapi/white.png"), any_roll=any_roll) == []


def test_an_image_smaller_than_the_smallest_face_has_none(astronaut):
    # 16 px is under MTCNN's 20 px minimum face: its pyramid has no scale there, and
    # facenet-pytorch's cascade stopped with "torch.cat(): expected a non-empty list"
    thumbnail = cv2.resize(astronaut, (16, 16), interpolation=cv2.INTER_AREA)
    (tiny, _), (boxes, _) = F.detect_boxes([thumbnail, astronaut], device="cpu")
    assert tiny.shape == (0, 4) and len(boxes) == 1
    assert F.find_faces(thumbnail, any_roll=True) == []


def test_a_printed_face_on_its_side_among_dogs(fixtures_dir):
    # dlib's dog photo has a magazine lying sideways at its left edge with a woman's face on
    # it (about 40 px): upright, nothing is found; at any roll, that face, three turns from
    # upright.
    image = read_rgb(fixtures_dir / "dlib_faces/dogs.jpg")
    assert F.find_faces(image) == []
    (face,) = F.find_faces(image, any_roll=True)
    assert face.crop.turn == 3 and face.score >= F.TURNED_SCORE
    assert 60 < face.box[0] < face.box[2] < 110 and 455 < face.box[1] < face.box[3] < 495


def test_dlib_detector_agrees_with_mtcnn_on_the_astronaut(astronaut):
    # dlib's HOG detector (upsampled once) also fires weakly on the space suit (margin 0.12);
    # its best detection is the face MTCNN finds.
    (mtcnn,) = F.find_faces(astronaut)
    best = max(F.find_faces(astronaut, detector="dlib"), key=lambda f: f.score)
    assert np.abs(best.landmarks - mtcnn.landmarks).mean() < 3.0


# Measured (MTCNN boxes mapped by faces._to_dlib_box): ffhq10 mean 0.0275, dlib's 25 hand-
# annotated test faces mean 0.0150. Bounds leave a margin for library builds.
@pytest.mark.parametrize("bound", [0.035])
def test_landmarks_against_ffhq10_hand_points(fixtures_dir, bound):
    errors = []
    for png in sorted((fixtures_dir / "ffhq10").glob("*.png")):
        truth = np.load(png.with_suffix(".npy"))
        faces = F.find_faces(read_rgb(png))
        errors.append(inter_ocular_nme(nearest_face(faces, truth).landmarks, truth))
    assert len(errors) == 10
    assert np.mean(errors) < bound, errors


def test_landmarks_against_dlib_hand_annotations(fixtures_dir):
    root = ET.parse(fixtures_dir / "dlib_faces/testing_with_face_landmarks.xml").getroot()
    errors = []
    for node in root.iter("image"):
        image = read_rgb(fixtures_dir / "dlib_faces" / node.get("file"))
        faces = F.find_faces(image)
        for box in node.findall("box"):
            truth = np.zeros((68, 2))
            for part in box.findall("part"):
                truth[int(part.get("name"))] = float(part.get("x")), float(part.get("y"))
            errors.append(inter_ocular_nme(nearest_face(faces, truth).landmarks, truth))
    assert len(errors) == 25
    assert np.mean(errors) < 0.025, errors


def test_crop_transform_round_trip_and_placement(astronaut):
    (face,) = F.find_faces(astronaut, crop_size=128)
    pts = face.crop.to_crop(face.landmarks)
    np.testing.assert_allclose(face.crop.to_image(pts), face.landmarks, atol=1e-9)
    # The landmarks are centred and span half the crop (context 2.0).
    extent = pts.max(0) - pts.min(0)
    assert extent.max() == pytest.approx(64, abs=1e-6)
    np.testing.assert_allclose((pts.max(0) + pts.min(0)) / 2, [64, 64], atol=1e-6)
    crop = F.crop_face(astronaut, face.crop)
    assert crop.shape == (128, 128, 3) and crop.dtype == np.uint8


def test_majority_mask_votes_over_masks_carried_through_the_image():
    """Against a reference: each pixel of the target crop taken to the image and into each
    mask's crop, counted where it lands inside. The crops differ by whole pixels and a quarter
    turn, so every pixel lands on a pixel (no rounding convention to match)."""
    rng = np.random.default_rng(0)
    at = F.CropTransform(2.0, -100.0, -60.0, 64)
    crops = [F.CropTransform(2.0, -96.0, -62.0, 64), at, F.CropTransform(2.0, -58.0, 163.0, 64, 1)]
    masks = [rng.random((64, 64)) < 0.5 for _ in crops]
    v, u = np.mgrid[0:64, 0:64]
    image = at.to_image(np.c_[u.ravel(), v.ravel()])
    votes = np.zeros(64 * 64, int)
    for mask, crop in zip(masks, crops):
        uv = np.rint(crop.to_crop(image)).astype(int)
        inside = ((uv >= 0) & (uv < 64)).all(1)
        votes[inside] += mask[uv[inside, 1], uv[inside, 0]]
        assert inside.mean() > 0.5  # the crops overlap mostly
    np.testing.assert_array_equal(F.majority_mask(masks, crops, at), (votes >= 2).reshape(64, 64))
    # masks of one crop: a plain vote, pixel by pixel
    np.testing.assert_array_equal(F.majority_mask(masks, [at] * 3, at), sum(masks) >= 2)


def test_feathered_mask_stays_inside_crop(astronaut):
    (face,) = F.find_faces(astronaut)
    region = F.face_region(face.crop.to_crop(face.landmarks), 128)
    soft = F.feathered_mask(region)
    assert soft.max() == pytest.approx(1.0) and soft.min() == 0.0
    border = np.concatenate([soft[0], soft[-1], soft[:, 0], soft[:, -1]])
    assert (border == 0).all()
    assert (soft[region == 0] < 0.5).all()


def test_the_larger_of_two_overlapping_faces_is_pasted_in_front(astronaut):
    # A face half hidden behind a nearer one (an audience member behind a singer's head on the
    # Hamilton clip) must not be drawn over it, whatever order the faces come in.
    (near,) = F.find_faces(astronaut, crop_size=128)
    centre = near.landmarks.mean(0)
    behind = (near.landmarks - centre) * 0.5 + centre + [40.0, 0.0]
    far = F.Face(np.concatenate([behind.min(0), behind.max(0)]), near.score, behind,
                 F.crop_transform(behind, 128))
    region = {id(f): F.face_region(f.crop.to_crop(f.landmarks), 128) for f in (near, far)}
    painted = {id(near): 255, id(far): 0}

    def paste(order):
        return F.paste_faces(np.full_like(astronaut, 128), order,
                             [np.full((128, 128, 3), painted[id(f)], np.uint8) for f in order],
                             [region[id(f)] for f in order])

    overlap = (paste([near]) == 255).all(2) & (paste([far]) == 0).all(2)
    assert overlap.sum() > 500
    for order in ([near, far], [far, near]):
        assert (paste(order)[overlap] == 255).all()


@pytest.fixture(scope="module")
def group(fixtures_dir):
    """The six-face group photo and its faces found upright."""
    image = read_rgb(fixtures_dir / "group/insightface_t1.jpg")
    return image, F.find_faces(image)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_faces_of_a_turned_photo_are_found_upright(group, k):
    # The photo turned so that its faces need k quarter turns to stand upright: the upright
    # detector misses most of them; at any roll each is found in its turn, with the landmarks
    # and the crop it has in the upright photo.
    image, upright = group
    turned = np.ascontiguousarray(np.rot90(image, -k))
    assert len(F.find_faces(turned)) <= 2
    found = F.find_faces(turned, any_roll=True)
    assert len(found) == len(upright) == 6
    for face in found:
        assert face.crop.turn == k
        back = F.turn_points(face.landmarks, turned.shape, k)
        twin = nearest_face(upright, back)
        np.testing.assert_allclose(back, twin.landmarks, atol=1e-6)
        reference = F.crop_transform(back, face.crop.size)
        pts = face.crop.to_crop(face.landmarks)
        np.testing.assert_allclose(pts, reference.to_crop(back), atol=1e-6)
        np.testing.assert_allclose(face.crop.to_image(pts), face.landmarks, atol=1e-9)
        crop = F.crop_face(turned, face.crop)
        assert np.abs(crop.astype(int) - F.crop_face(image, reference)).max() <= 5


@pytest.mark.parametrize("k", [1, 2, 3])
def test_a_turned_face_is_pasted_back_where_it_was_cut(group, k):
    # Pasting through the exact inverse of a turned crop paints what the upright photo's paste
    # paints, turned.
    image, _ = group
    turned = np.ascontiguousarray(np.rot90(image, -k))
    for face in F.find_faces(turned, any_roll=True):
        back = F.turn_points(face.landmarks, turned.shape, k)
        twin = F.Face(F.turn_box(face.box, turned.shape, k), face.score, back,
                      F.crop_transform(back, face.crop.size))
        mask = F.feathered_mask(F.face_region(face.crop.to_crop(face.landmarks), face.crop.size))
        paint = np.full((face.crop.size,) * 2 + (3,), 200, np.uint8)
        pasted = np.rot90(F.paste_faces(turned, [face], [paint], [mask]), k)
        assert np.abs(pasted.astype(int) - F.paste_faces(image, [twin], [paint], [mask])).max() <= 1
        assert (pasted != image).any()


@pytest.mark.parametrize("name", ["Albert_Costa/Albert_Costa_0003.jpg",
                                  "Butch_Davis/Butch_Davis_0001.jpg",
                                  "Alicia_Molik/Alicia_Molik_0001.jpg"])
def test_textures_taken_for_turned_faces_are_left_alone(name):
    # MTCNN takes an ear, a hand and a blur of background for faces on their side (scores
    # 0.92-0.96); dlib's HOG detector finds no face there, so at any roll these photos keep
    # their upright faces only.
    image = read_rgb(need_shared("lfw/images_deepfunneled") / name)
    boxes, _ = F.detect_boxes([image])[0]
    turned = [F.turn_box(b, view.shape, -k)
              for k in (1, 2, 3) for view in [np.ascontiguousarray(np.rot90(image, k))]
              for b in F.detect_boxes([view])[0][0]]
    assert any(max(F._overlap(t, b) for b in boxes) < F.SAME_FACE_OVERLAP for t in turned)
    found, _, turns = F.detect_faces([image], any_roll=True)[0]
    np.testing.assert_array_equal(found, boxes)
    assert (turns == 0).all()
