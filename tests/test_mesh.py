"""Turned faces through MediaPipe's face mesh (:mod:`fiftyone_faceanon.mesh`).

Real photos bundled with scikit-image (public domain): the cameraman, his head turned about
57° to the picture's right, and the astronaut, frontal. No ``../shared`` needed.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from skimage import data

from fiftyone_faceanon import faces as F
from fiftyone_faceanon import mesh as M
from fiftyone_faceanon.geometry import fit_similarity
from fiftyone_faceanon.pipeline import Pipeline, Settings

NOSE_TIP = 4  # MediaPipe's numbering


def _face(image: np.ndarray) -> tuple[F.Face, np.ndarray, np.ndarray]:
    """The photo's one face as the pipeline finds it, its crop and its detector box in crop
    px."""
    s = Settings()
    ((box,), (score,), (turn,)), = F.detect_faces([image], s.detector, s.threshold,
                                                  s.min_face_size, s.device, s.any_roll)
    face = F.face_from_box(image, box, score, None, turn=turn)
    crop = F.crop_face(image, face.crop)
    corners = face.crop.to_crop(np.reshape(face.box, (2, 2)))
    return face, crop, np.r_[corners.min(0), corners.max(0)]


@pytest.fixture(scope="module")
def cameraman() -> np.ndarray:
    return np.ascontiguousarray(np.stack([data.camera()] * 3, -1))


def test_the_mesh_finds_a_turned_head_s_nose_where_dlib_does_not(cameraman):
    """dlib's 68 points put the cameraman's nose on his cheek; the mesh puts it at the tip of
    his nose, where the face's outline is, and reads his head turned far beyond the bank's
    donors (the frontal astronaut is not)."""
    face, crop, box = _face(cameraman)
    points = M.face_mesh(crop, box)
    assert points.shape == (468, 3)
    assert M.yaw(points) > 45
    dlib_nose = face.crop.to_crop(face.landmarks)[30]
    assert points[NOSE_TIP, 0] - dlib_nose[0] > 0.2 * (box[2] - box[0])
    # the nose tip is the mesh's rightmost point of the face's middle band: the outline
    middle = np.abs(points[:, 1] - points[NOSE_TIP, 1]) < 0.1 * (box[3] - box[1])
    assert points[NOSE_TIP, 0] >= points[middle, 0].max() - 2.0
    assert isinstance(M.turned(crop, box), M.Mesh)
    _, crop, box = _face(data.astronaut())
    assert abs(M.yaw(M.face_mesh(crop, box))) < 15
    assert M.turned(crop, box) is None


def test_triangles_are_drawn_far_to_near_and_those_facing_away_are_not():
    points = np.array([[0, 0, 5], [10, 0, 5], [0, 10, 5],      # far, facing the camera
                       [2, 2, -5], [12, 2, -5], [2, 12, -5],   # near, facing the camera
                       [20, 0, 0], [20, 10, 0], [30, 0, 0]], float)  # facing away
    triangles = np.array([[3, 4, 5], [0, 1, 2], [6, 7, 8]])
    assert (M._signed_areas(points[:, :2], triangles) > 0).tolist() == [True, True, False]
    np.testing.assert_array_equal(M.drawn(points, triangles), [[0, 1, 2], [3, 4, 5]])
    surface = M.surface(points, triangles, 32)
    assert surface[1, 1] and surface[4, 4] and not surface[3, 25]


def test_fit_similarity_recovers_a_3d_similarity():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(50, 3))
    rotation = Rotation.from_euler("xyz", [20, -50, 10], degrees=True).as_matrix()
    moved = 1.7 * points @ rotation + [3.0, -1.0, 2.0]
    fit = fit_similarity(points, moved)
    np.testing.assert_allclose(fit.apply(points), moved, atol=1e-9)
    assert fit.scale == pytest.approx(1.7)
    np.testing.assert_allclose(fit.invert(moved), points, atol=1e-9)


def test_a_mesh_moves_towards_another_shape_but_keeps_its_pose(cameraman):
    _, crop, box = _face(cameraman)
    mesh = M.turned(crop, box)
    donor = M.face_mesh(*_face(data.astronaut())[1:])
    assert mesh.toward(donor, 0.0) is mesh  # geometry 0: the mesh as found
    # a shape that is this one's, only moved, turned and scaled, moves nothing
    same = 0.5 * mesh.points @ Rotation.from_euler("y", 40, degrees=True).as_matrix() + 7.0
    np.testing.assert_allclose(mesh.toward(same, 1.0).points, mesh.points, atol=1e-6)
    full, half = mesh.toward(donor, 1.0), mesh.toward(donor, 0.5)
    np.testing.assert_allclose(half.points, (mesh.points + full.points) / 2, atol=1e-9)
    assert M.yaw(full.points) > 45  # still turned as the cameraman is
    shape = np.linalg.norm(full.points - mesh.points, axis=1).mean()
    assert shape > 1.0  # the astronaut's shape is not the cameraman's


def test_a_donor_is_drawn_through_the_mesh_nearest_surface_in_front(cameraman):
    """Drawn from an image whose pixels are their own coordinates, each drawn pixel tells where
    in the donor it comes from. Against a per-pixel depth test over every triangle facing the
    camera (the reference), the far-to-near drawing shows the nearest surface at almost every
    pixel, and the cameraman's nose tip shows the frontal astronaut's nose tip (dlib's 68
    points put his nose on his cheek)."""
    _, crop, box = _face(cameraman)
    mesh = M.turned(crop, box)
    _, donor_crop, donor_box = _face(data.astronaut())
    donor = M.face_mesh(donor_crop, donor_box)[:, :2]
    side = donor_crop.shape[0]
    coords = np.dstack(np.meshgrid(np.arange(side), np.arange(side))).astype(np.float32)
    size = crop.shape[0]
    drawn, covered = M.render(coords, donor, mesh, size)
    # the reference: per pixel, the triangle whose interpolated depth is nearest
    tris = M.drawn(mesh.points, mesh.triangles)
    ys, xs = np.nonzero(covered)
    pixels = np.c_[xs, ys].astype(float)
    a, b, c = (mesh.points[tris[:, k]] for k in range(3))
    det = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    d = pixels[:, None] - a[None, :, :2]
    u = (d[..., 0] * (c[:, 1] - a[:, 1]) - d[..., 1] * (c[:, 0] - a[:, 0])) / det
    v = (d[..., 1] * (b[:, 0] - a[:, 0]) - d[..., 0] * (b[:, 1] - a[:, 1])) / det
    inside = (u >= 0) & (v >= 0) & (u + v <= 1)
    depth = np.where(inside, (1 - u - v) * a[:, 2] + u * b[:, 2] + v * c[:, 2], np.inf)
    nearest = depth.argmin(1)
    found = inside.any(1)
    w = np.c_[1 - u[found, nearest[found]] - v[found, nearest[found]],
              u[found, nearest[found]], v[found, nearest[found]]]
    expected = np.einsum("nk,nkj->nj", w, donor[tris[nearest[found]]])
    got = drawn[ys[found], xs[found]]
    error = np.linalg.norm(got - expected, axis=1)  # donor px
    # (what differs is at triangle edges, which both sides fill, and where the order of the
    # triangles' mean depths is not that of their depths at a pixel: within a few pixels;
    # the wrong surface, the far cheek for the nose, is tens of donor pixels off)
    assert found.mean() > 0.95 and (error < 1).mean() > 0.97 and (error < 5).mean() > 0.995
    tip = np.round(mesh.points[NOSE_TIP, :2]).astype(int)
    assert np.linalg.norm(drawn[tip[1], tip[0]] - donor[NOSE_TIP]) < 3.0


def test_a_turned_face_is_replaced_over_its_surface_only(cameraman):
    """At geometry 0 the cameraman's face is replaced over its visible surface: beyond it
    (grown by the paste's feather) every pixel is the photo's own, bit for bit, and the face
    on it is another's. The same seed gives the same bytes."""
    face, crop, box = _face(cameraman)
    pipeline = Pipeline(Settings(geometry=0.0, verify=False))
    out = pipeline.anonymize(cameraman, key="cameraman.png").image
    assert np.array_equal(out, pipeline.anonymize(cameraman, key="cameraman.png").image)
    after = F.crop_face(out, face.crop)
    surface = M.turned(crop, box).surface(crop.shape[0])
    beyond = F.soften(surface, 4) == 0
    np.testing.assert_array_equal(after[beyond], crop[beyond])
    inside = F.feathered_mask(surface.astype(np.float32)) > 0.99
    assert np.abs(after[inside].astype(int) - crop[inside]).mean() > 8


def test_a_donor_s_hair_and_background_are_not_drawn_onto_a_turned_cheek():
    """The donor the J. Lopez profile of LFW got (grey hair down both sides of her face):
    around its features what is not its skin is filled from its skin, the features and chin
    are its own bit for bit."""
    from fiftyone_faceanon.anonymizers import create_backend
    from fiftyone_faceanon.anonymizers.donor import SKIN_INNER

    backend = create_backend("donor")
    (d,) = np.nonzero(backend.bank.ids == "synthetic_faces/sfhq/SFHQ_sample_2x4.jpg#r1c0")[0]
    image, lms = backend.bank.image(d), backend.bank.landmarks[d].astype(np.float64)
    face = backend.donor_face(d)
    inner = F.polygon_mask(lms[SKIN_INNER], image.shape[0])
    np.testing.assert_array_equal(face[inner], image[inner])
    near = F.polygon_mask(lms[SKIN_INNER], image.shape[0],  # beyond SKIN_FEATURES
                          int(0.1 * np.linalg.norm(lms[36] - lms[45])))
    outside = ~near & (F.face_region(lms, image.shape[0], 0.3) > 0)
    hair = F.not_skin(image, lms) & outside
    assert hair.mean() / outside.mean() > 0.1  # her hair covers the sides of her face
    assert (F.not_skin(face, lms) & outside).sum() < 0.2 * hair.sum()


def test_a_turned_face_gets_a_donor_turned_its_way(cameraman):
    """dlib's points read the cameraman, turned 57° to the picture's right, as turned the other
    way; to be verified, he is read at his mesh's yaw, and his cheapest donors are those turned
    his way as drawn: a donor turned the other way is drawn mirrored, its mesh that of its
    mirror image (turned as far the other way). Not to be verified, he is read as before."""
    from fiftyone_faceanon.anonymizers import create_backend
    from fiftyone_faceanon.donors import head_pose

    face, crop, box = _face(cameraman)
    lms = face.crop.to_crop(face.landmarks)
    mesh = M.turned(crop, box)
    assert head_pose(lms)[0] < 0
    backend = create_backend("donor")
    unverified = backend.read(crop, lms, verified=False, mesh=mesh)
    assert backend.facing(unverified) == 0 and unverified.attributes["yaw"] < 0
    reading = backend.read(crop, lms, mesh=mesh)
    assert backend.facing(reading) == reading.attributes["yaw"] == M.yaw(mesh.points) > 45
    yaws = backend.column("yaw")
    drawn = np.where(backend.mirrored(np.arange(len(yaws)), reading.facing), -yaws, yaws)
    assert (drawn >= 0).all() and not backend.mirrored(int(np.argmax(yaws)), reading.facing)
    cheapest = np.argsort(backend.cost(reading))[:6]  # (dlib's reading: -3° at the median)
    assert np.median(drawn[cheapest]) > np.percentile(drawn, 75) and drawn[cheapest].min() > 5
    away = int(np.argmin(yaws))  # the donor turned farthest to the picture's left
    assert yaws[away] < -20 and backend.mirrored(away, reading.facing)
    own, mirrored = M.yaw(backend.donor_mesh(away)), M.yaw(backend.donor_mesh(away, 57.0))
    assert own < -10 and abs(mirrored + own) < 3
