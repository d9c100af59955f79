"""Photometric post-processing: hand-computed examples and properties (paper III-B-2)."""

import cv2
import numpy as np
import pytest

from fiftyone_faceanon import photometric as P


def ycrcb(image):
    return cv2.cvtColor(image.astype(np.float32), cv2.COLOR_RGB2YCrCb)


@pytest.fixture
def face_crop(astronaut):
    from fiftyone_faceanon import faces as F

    (face,) = F.find_faces(astronaut)
    crop = F.crop_face(astronaut, face.crop).astype(np.float32) / 255
    region = F.face_region(face.crop.to_crop(face.landmarks), 128)
    return crop, region


def test_gray_by_hand():
    image = np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [[0.0, 0.0, 1.0], [0.5, 0.5, 0.5]]])
    np.testing.assert_allclose(P.gray(image), [[0.299, 0.587], [0.114, 0.5]], atol=1e-6)


def test_shading_of_flat_image_is_its_gray_level():
    image = np.full((16, 16, 3), (0.2, 0.4, 0.6), np.float32)
    expected = 0.299 * 0.2 + 0.587 * 0.4 + 0.114 * 0.6
    np.testing.assert_allclose(P.shading(image), expected, atol=1e-6)


def test_shading_keeps_a_strong_edge_and_smooths_texture():
    # A step from 0.2 to 0.8 (an illumination boundary) survives the bilateral filter;
    # +-0.02 texture (below sigma_color) is flattened.
    rng = np.random.default_rng(0)
    image = np.full((32, 32, 3), 0.2, np.float32)
    image[:, 16:] = 0.8
    image += rng.uniform(-0.02, 0.02, (32, 32, 1)).astype(np.float32)
    s = P.shading(image)
    assert abs(s[:, :12].mean() - 0.2) < 0.01 and abs(s[:, 20:].mean() - 0.8) < 0.01
    assert s[:, :12].std() < 0.5 * P.gray(image)[:, :12].std()


def test_albedo_by_hand():
    image = np.array([[[0.4, 0.2, 0.1]]], np.float32)
    np.testing.assert_allclose(P.albedo(image, np.array([[0.5]])), [[[0.8, 0.4, 0.2]]])
    # A zero shading is floored at eps, not divided by.
    assert np.isfinite(P.albedo(image, np.array([[0.0]]))).all()


def test_relight_by_hand():
    # Flat images: A(I_a) = I_a / gray(I_a), S(I_o) = gray(I_o).
    anon = np.full((8, 8, 3), (0.5, 0.25, 0.25), np.float32)
    orig = np.full((8, 8, 3), 0.2, np.float32)
    g_a = 0.299 * 0.5 + 0.587 * 0.25 + 0.114 * 0.25
    expected = np.broadcast_to(np.array([0.5, 0.25, 0.25]) / g_a * 0.2, anon.shape)
    np.testing.assert_allclose(P.relight(anon, orig), expected, atol=1e-5)


def test_relighting_with_own_shading_is_identity(face_crop):
    crop, _ = face_crop
    np.testing.assert_allclose(P.relight(crop, crop), crop, atol=1e-5)


def test_pyramid_round_trip(face_crop):
    crop, _ = face_crop
    np.testing.assert_allclose(P.collapse(P.laplacian_pyramid(crop, 4)), crop, atol=1e-5)


def test_pyramid_blend_by_hand():
    # Flat images have zero Laplacian bands: the blend is the relit image's low band.
    anon = np.full((32, 32, 3), 0.3, np.float32)
    relit = np.full((32, 32, 3), 0.6, np.float32)
    np.testing.assert_allclose(P.pyramid_blend(anon, relit, 3), 0.6, atol=1e-6)


def test_pyramid_blend_keeps_detail_and_takes_low_frequencies(face_crop):
    crop, _ = face_crop
    darker = crop * 0.8
    out = P.pyramid_blend(crop, darker, 4)
    # The lowest band comes from the relit image, fine detail from the anonymized one.
    # (Up to what the finer bands leak into it: pyrUp/pyrDown are not exact inverses.)
    low, low_relit, low_anon = (P.gaussian_pyramid(x, 4)[-1] for x in (out, darker, crop))
    assert np.abs(low - low_relit).mean() < 0.25 * np.abs(low_anon - low_relit).mean()
    detail = crop - cv2.GaussianBlur(crop, (0, 0), 2)
    out_detail = out - cv2.GaussianBlur(out, (0, 0), 2)
    assert np.corrcoef(detail.ravel(), out_detail.ravel())[0, 1] > 0.95


def test_color_transfer_by_hand():
    # Two pixels whose Cb/Cr are (c - d, c + d); the reference has the same Y, other chroma.
    image = np.array([[[0.5, 0.4, 0.4], [0.4, 0.5, 0.5]]], np.float32)
    reference = np.array([[[0.45, 0.45, 0.35], [0.45, 0.45, 0.55]]], np.float32)
    out = P.color_transfer(image, reference, np.ones((1, 2), np.float32))
    t, r, o = ycrcb(image), ycrcb(reference), ycrcb(out)
    for c in (1, 2):
        mu_t, sd_t = t[..., c].mean(), t[..., c].std()
        mu_r, sd_r = r[..., c].mean(), r[..., c].std()
        np.testing.assert_allclose(o[..., c], (t[..., c] - mu_t) * sd_r / sd_t + mu_r, atol=1e-5)
    np.testing.assert_allclose(o[..., 0], t[..., 0], atol=1e-5)


def test_color_transfer_matches_region_statistics(face_crop):
    crop, region = face_crop
    # A colour-shifted copy stays in range, so no clipping disturbs the statistics.
    anon = np.clip(crop * np.array([0.8, 1.0, 1.1], np.float32) + 0.03, 0, 1) * 0.9
    out = P.color_transfer(anon, crop, region)
    sel = region > 0
    o, r, a = ycrcb(out), ycrcb(crop), ycrcb(anon)
    # Exact up to the final clipping to [0, 1] of a few saturated pixels.
    for c in (1, 2):
        assert o[..., c][sel].mean() == pytest.approx(r[..., c][sel].mean(), abs=1e-3)
        assert o[..., c][sel].std() == pytest.approx(r[..., c][sel].std(), abs=1e-3)
    unclipped = ((out > 0) & (out < 1)).all(axis=2)
    np.testing.assert_allclose(o[..., 0][unclipped], a[..., 0][unclipped], atol=1e-4)  # Y kept


def test_postprocess_switches(face_crop):
    crop, region = face_crop
    anon = (np.clip(crop[::-1] * 0.7, 0, 1) * 255).round().astype(np.uint8)
    orig = (crop * 255).round().astype(np.uint8)
    off = P.PhotometricSettings(relight=False, pyramid=False, color_transfer=False,
                                most_detail=None)
    np.testing.assert_array_equal(P.postprocess(anon, orig, region, off), anon)
    outs = {
        name: P.postprocess(anon, orig, region, s)
        for name, s in {
            "relight": P.PhotometricSettings(pyramid=False, color_transfer=False),
            "pyramid": P.PhotometricSettings(color_transfer=False),
            "all": P.PhotometricSettings(),
        }.items()
    }
    assert len({o.tobytes() for o in outs.values()}) == 3
    for o in outs.values():
        assert o.dtype == np.uint8 and o.shape == anon.shape


def test_detail_by_hand():
    # one white pixel on black: the Laplacian is -4 * 255 there and 255 at its 4 neighbours,
    # mean 0 over the 64 pixels, variance (1020^2 + 4 * 255^2) / 64
    image = np.zeros((8, 8, 3), np.float32)
    image[4, 4] = 1.0
    assert P.detail(image, np.ones((8, 8)), 8) == pytest.approx((1020**2 + 4 * 255**2) / 64)
    assert P.detail(np.full((8, 8, 3), 0.5, np.float32), np.ones((8, 8)), 8) == 0.0


def test_match_detail_blurs_a_face_sharper_than_its_photo_down_to_the_bound(face_crop):
    crop, region = face_crop
    soft = cv2.GaussianBlur(crop, (0, 0), 2.5)  # the original: a soft photo of the face
    limit = P.MOST_DETAIL * P.detail(soft, region, 128)
    assert P.detail(crop, region, 128) > 3 * limit
    out = P.match_detail(crop, soft, region)
    assert 0.9 * limit <= P.detail(out, region, 128) <= limit
    assert P.match_detail(soft, crop, region) is soft  # a face softer than its photo: as it is


def test_match_detail_compares_a_small_face_at_its_own_resolution(face_crop):
    # a crop upsampled 2x from a 64 px face holds little detail at 128 px, but as much as the
    # new face once both are seen at 64 px, the face's size in the image
    crop, region = face_crop
    upsampled = cv2.resize(cv2.resize(crop, (64, 64), interpolation=cv2.INTER_AREA), (128, 128),
                           interpolation=cv2.INTER_LINEAR)
    assert P.detail(crop, region, 128) > 3 * P.MOST_DETAIL * P.detail(upsampled, region, 128)
    assert P.match_detail(crop, upsampled, region, scale=2.0) is crop
    assert P.detail(P.match_detail(crop, upsampled, region, scale=1.0), region, 128) < (
        P.detail(crop, region, 128) / 3)


def test_postprocess_matches_detail_unless_switched_off(face_crop):
    crop, region = face_crop
    soft = np.rint(cv2.GaussianBlur(crop, (0, 0), 2.5) * 255).astype(np.uint8)
    sharp = np.rint(crop * 255).astype(np.uint8)
    on = P.postprocess(sharp, soft, region)
    off = P.postprocess(sharp, soft, region, P.PhotometricSettings(most_detail=None))
    f = [x.astype(np.float32) / 255 for x in (on, off, soft)]
    assert P.detail(f[0], region, 128) <= P.MOST_DETAIL * P.detail(f[2], region, 128) * 1.05
    assert P.detail(f[1], region, 128) > 3 * P.detail(f[0], region, 128)


def test_a_verified_face_in_a_soft_photo_gets_a_donor_as_soft_as_it(astronaut):
    # the astronaut a little out of focus (a Gaussian of 1.3 px): a donor set into it as it is
    # holds several times its detail; verified (at its first try), at most MOST_DETAIL times
    # (the paste's feathered edge adds a little); not verified, the donor's detail stays
    from fiftyone_faceanon import faces as F
    from fiftyone_faceanon.pipeline import Pipeline, Settings

    image = cv2.GaussianBlur(astronaut, (0, 0), 1.3)
    ratio = {}
    for name, settings in {
        "off": Settings(photometric=P.PhotometricSettings(most_detail=None)),
        "verified": Settings(),
        "not verified": Settings(verify=False),
    }.items():
        result = Pipeline(settings).anonymize(image, "astronaut.png")
        (face,) = result.faces
        assert result.records[0].tries == 1
        region = F.face_region(face.crop.to_crop(face.landmarks), face.crop.size)
        before, after = (F.crop_face(im, face.crop).astype(np.float32) / 255
                         for im in (image, result.image))
        ratio[name] = (P.detail(after, region, face.crop.size)
                       / P.detail(before, region, face.crop.size))
    assert ratio["off"] > 3 and ratio["not verified"] > 3
    assert ratio["verified"] <= 1.2 * P.MOST_DETAIL


def test_a_face_too_small_to_judge_keeps_the_donors_detail(fixtures_dir):
    # the magazine face lying at the edge of dlib's dog photo (32 px, printed, out of focus) is
    # too small for the judges: blurred towards its photo, nothing would check that it became
    # more like it, so its donor's detail stays
    from conftest import read_rgb
    from fiftyone_faceanon.pipeline import Pipeline, Settings
    from fiftyone_faceanon.verify import large_enough

    image = read_rgb(fixtures_dir / "dlib_faces/dogs.jpg")
    on, off = (Pipeline(Settings(photometric=P.PhotometricSettings(most_detail=most))).anonymize(
        image, "dogs.jpg") for most in (P.MOST_DETAIL, None))
    (face,) = on.faces
    assert not large_enough(face) and on.records[0].status == "too_small"
    np.testing.assert_array_equal(on.image, off.image)
