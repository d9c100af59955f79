"""Bad and unusual inputs: each gives a one-line error or a recorded result, the run goes on."""

import io
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from fiftyone_faceanon.cli import main
from fiftyone_faceanon.images import ImageError, load_image


def jpeg_bytes(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def bad_tree(tmp_path_factory, astronaut, fixtures_dir):
    """A folder holding one file of each kind; the CLI is run over it once."""
    root = tmp_path_factory.mktemp("bad")
    src = root / "in"
    src.mkdir()
    im = Image.fromarray(astronaut)
    (src / "corrupt.jpg").write_bytes(np.random.default_rng(0).bytes(5000))
    (src / "truncated.jpg").write_bytes(jpeg_bytes(im)[:20000])
    (src / "empty.png").write_bytes(b"")
    (src / "notes.png").write_text("these are notes, not a picture\n")
    Image.new("1", (20000, 20000)).save(src / "bomb.png")  # 400 Mpx in a few kB
    im.convert("L").save(src / "gray.png")
    rgba = im.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(im.size))
    rgba.save(src / "rgba.png")
    Image.fromarray((np.asarray(im.convert("L"), np.uint16) * 257)).save(src / "deep16.png")
    (src / "cmyk.jpg").write_bytes(jpeg_bytes(im.convert("CMYK"), quality=95))
    im.quantize(256).save(src / "palette.png")
    (src / "noface.png").write_bytes((fixtures_dir / "faceapi/white.png").read_bytes())
    im.resize((112, 112), Image.LANCZOS).save(src / "tiny_face.png")  # face about 20 px
    im.resize((16, 16), Image.LANCZOS).save(src / "thumbnail.png")  # under the smallest face
    im.save(src / "still.gif", comment=b"taken at home")
    flipped = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for name in ("animated.gif", "animated.webp"):  # the face would be unseen on frame 2
        Image.new("RGB", im.size).save(src / name, save_all=True, append_images=[flipped],
                                       duration=100)
    im.save(src / "photo.avif")  # read by Pillow, not written here
    (src / "phone.heic").write_bytes(jpeg_bytes(im))  # by its name: neither read nor written
    # a camera's MPO: a JPEG holding a second picture (a stereo view)
    im.save(src / "stereo.jpg", format="MPO", save_all=True, append_images=[flipped])
    result = CliRunner().invoke(main, ["anonymize", str(src), "-o", str(root / "out")])
    return src, root / "out", result


ERRORS = {
    "corrupt.jpg": "not a readable image",
    "truncated.jpg": "corrupt or truncated",
    "empty.png": "empty file",
    "notes.png": "not a readable image",
    "bomb.png": "decompression bomb",
    "animated.gif": "2 frames (an animated image",
    "animated.webp": "2 frames (an animated image",
    "photo.avif": "unsupported extension '.avif'",
    "phone.heic": "unsupported extension '.heic'",
}


def test_run_continues_and_exit_code_tells(bad_tree):
    src, out, result = bad_tree
    assert result.exit_code == 1
    error_lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == len(ERRORS)
    for name, reason in ERRORS.items():
        (line,) = [line for line in error_lines if f"{name}:" in line]
        assert reason in line and str(src / name) in line
        assert not (out / name).exists()
    assert f"{len(ERRORS)} failed" in result.output


@pytest.mark.parametrize("name, mode", [
    ("gray.png", "L"), ("rgba.png", "RGBA"), ("deep16.png", "L"), ("cmyk.jpg", "RGB"),
    ("palette.png", "RGB"), ("still.gif", "P"), ("stereo.jpg", "RGB"),
])
def test_unusual_modes_are_anonymized(bad_tree, name, mode):
    src, out, _ = bad_tree
    sidecar = json.loads((out / f"{name}.json").read_text())
    assert sidecar["status"] == "ok" and len(sidecar["faces"]) == 1, name
    result = Image.open(out / name)
    assert result.mode == mode and result.size == (512, 512)


def test_a_gif_is_written_as_a_gif_of_one_frame_without_its_comment(bad_tree):
    src, out, _ = bad_tree
    assert Image.open(src / "still.gif").info["comment"] == b"taken at home"
    result = Image.open(out / "still.gif")
    assert result.format == "GIF" and getattr(result, "n_frames", 1) == 1
    assert "comment" not in result.info
    stereo = Image.open(out / "stereo.jpg")
    assert stereo.format == "JPEG" and getattr(stereo, "n_frames", 1) == 1


def test_alpha_is_kept(bad_tree):
    src, out, _ = bad_tree
    before = np.asarray(Image.open(src / "rgba.png").getchannel("A"))
    after = np.asarray(Image.open(out / "rgba.png").getchannel("A"))
    np.testing.assert_array_equal(before, after)


def test_no_face_is_recorded_and_written(bad_tree):
    src, out, _ = bad_tree
    sidecar = json.loads((out / "noface.png.json").read_text())
    assert sidecar["status"] == "no_face" and sidecar["faces"] == []
    assert (out / "noface.png").is_file()


def test_a_thumbnail_smaller_than_any_face_is_written_without_one(bad_tree):
    src, out, _ = bad_tree
    sidecar = json.loads((out / "thumbnail.png.json").read_text())
    assert sidecar["status"] == "no_face" and sidecar["faces"] == []
    assert Image.open(out / "thumbnail.png").size == (16, 16)


def test_twenty_pixel_face_is_handled(bad_tree):
    src, out, _ = bad_tree
    sidecar = json.loads((out / "tiny_face.png.json").read_text())
    assert sidecar["status"] in ("ok", "no_face")
    for face in sidecar["faces"]:
        x0, y0, x1, y1 = face["box"]
        assert 12 <= x1 - x0 <= 40


def test_an_output_that_cannot_be_written_stops_the_run_before_its_first_image(tmp_path,
                                                                              astronaut):
    Image.fromarray(astronaut).save(tmp_path / "a.png")
    (tmp_path / "taken").write_text("a file where the output folder's parent should be\n")
    out = tmp_path / "taken" / "out"
    r = CliRunner().invoke(main, ["anonymize", str(tmp_path / "a.png"), "-o", str(out)])
    assert r.exit_code == 2, r.output
    assert f"{out}: cannot write there: Not a directory" in r.output
    assert "error: " not in r.output and "anonymized" not in r.output


def test_pixel_limit_is_configurable(tmp_path, astronaut):
    Image.fromarray(astronaut).save(tmp_path / "a.png")
    with pytest.raises(ImageError, match=r"a.png: 512x512 exceeds the pixel limit of 100,000"):
        load_image(tmp_path / "a.png", max_pixels=100_000)
    r = CliRunner().invoke(main, ["anonymize", str(tmp_path / "a.png"), "-o",
                                  str(tmp_path / "out"), "--max-pixels", "100000"])
    assert r.exit_code == 1 and "exceeds the pixel limit" in r.output


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ImageError, match="gone.jpg: no such file"):
        load_image(tmp_path / "gone.jpg")
