"""Reading any image safely into RGB, and writing outputs atomically with no metadata.

Every failure is an :class:`ImageError` whose message is one line naming the file and the reason.
"""

from __future__ import annotations

import fcntl
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Extensions read from folders and written back. A GIF is written with a 256-colour palette of
#: its own, as any GIF is.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
#: Photo formats a folder may hold that are not written here: HEIC/HEIF (phones), AVIF, JPEG XL,
#: JPEG 2000 and camera raw. Folders are searched for them too, so that none is left out without
#: a word: ``anonymize`` gives each an error line, the gate checks it where Pillow reads it and
#: else reports it unverifiable.
OTHER_PHOTO_EXTENSIONS = (".heic", ".heif", ".avif", ".jxl", ".jp2", ".j2k", ".dng", ".cr2",
                          ".cr3", ".nef", ".arw", ".raf", ".orf", ".rw2")
#: Formats whose extra frames :func:`load_image` leaves out rather than refuse: an MPO (a camera's
#: JPEG with a second picture: a stereo view or a large preview) is its first picture.
FIRST_FRAME_FORMATS = ("MPO",)
#: Default refusal limit against decompression bombs (width x height).
MAX_PIXELS = 64_000_000
JPEG_QUALITY = 95


class ImageError(Exception):
    """An input that cannot be read; ``str(e)`` is ``"<path>: <reason>"``."""

    def __init__(self, path: os.PathLike | str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


@dataclass
class LoadedImage:
    """An image as the pipeline sees it.

    ``rgb`` (H, W, 3) uint8 after EXIF orientation; ``alpha`` (H, W) uint8 or None; ``gray``
    when the source had no colour (the output is written as grayscale again).
    """

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    gray: bool = False


def load_image(path: os.PathLike | str, max_pixels: int = MAX_PIXELS) -> LoadedImage:
    """Decode ``path`` into a :class:`LoadedImage`.

    Handles grayscale, palette, RGBA/LA, CMYK and 16-bit sources; refuses zero-byte, truncated,
    non-image and over-``max_pixels`` files with an :class:`ImageError`, and files of more than
    one frame (an animated GIF, WebP or PNG, a multi-page TIFF; but :data:`FIRST_FRAME_FORMATS`):
    reading the first alone would leave the faces of the others unseen, by the anonymizer and the
    gate alike.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageError(path, "empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise ImageError(path, f"{w}x{h} exceeds the pixel limit of {max_pixels:,}")
                frames = getattr(im, "n_frames", 1)
                if frames > 1 and im.format not in FIRST_FRAME_FORMATS:
                    raise ImageError(path, f"{frames} frames (an animated image or a multi-page "
                                     "file): only still images are read; make it a video "
                                     "(e.g. MP4) or one file per frame")
                im.load()
                im = ImageOps.exif_transpose(im)
                return _to_rgb(im)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(path, f"refused as a decompression bomb ({e})") from None
    except UnidentifiedImageError:
        raise ImageError(path, "not a readable image (unknown or corrupt format)") from None
    except FileNotFoundError:
        raise ImageError(path, "no such file") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(path, f"corrupt or truncated image ({e})") from None


def expose(rgb: np.ndarray, gain: float) -> np.ndarray:
    """(H, W, 3) uint8 sRGB -> the same photo taken at ``gain`` times the exposure: every
    channel scaled by ``gain`` in linear light (gamma 2.2), clipped to white."""
    linear = (rgb.astype(np.float64) / 255) ** 2.2 * gain
    return np.rint(np.clip(linear, 0, 1) ** (1 / 2.2) * 255).astype(np.uint8)


def image_size(path: os.PathLike | str) -> tuple[int, int]:
    """``(width, height)`` from the file's header, without decoding (no EXIF orientation: meant
    for the metadata-free files :func:`encode_image` writes)."""
    with Image.open(path) as im:
        return im.size


def _to_rgb(im: Image.Image) -> LoadedImage:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im, dtype=np.float64) / 257.0
        g = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return LoadedImage(np.repeat(g[..., None], 3, axis=2), gray=True)
    if mode == "F":
        g = np.clip(np.rint(np.asarray(im, np.float64)), 0, 255).astype(np.uint8)
        return LoadedImage(np.repeat(g[..., None], 3, axis=2), gray=True)
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    gray = im.mode in ("1", "L", "LA")
    alpha = np.asarray(im.getchannel("A")) if im.mode in ("RGBA", "LA") else None
    rgb = np.asarray(im.convert("RGB"))
    return LoadedImage(np.ascontiguousarray(rgb), alpha, gray)


def encode_image(image: LoadedImage, suffix: str) -> bytes:
    """Encode a :class:`LoadedImage` for a file ending in ``suffix``, with no metadata at all:
    a fresh image from the pixel array, so no EXIF, XMP, IPTC, ICC profile or thumbnail of the
    source can travel."""
    import io

    suffix = suffix.lower()
    if image.gray:
        arr = image.rgb[..., 0] if _is_gray(image.rgb) else _luma(image.rgb)
        im = Image.fromarray(arr, "L")
        if image.alpha is not None:
            im = Image.merge("LA", (im, Image.fromarray(image.alpha, "L")))
    else:
        im = Image.fromarray(image.rgb, "RGB")
        if image.alpha is not None:
            im = Image.merge("RGBA", (*im.split(), Image.fromarray(image.alpha, "L")))
    if suffix in (".jpg", ".jpeg") and im.mode in ("RGBA", "LA"):
        im = im.convert(im.mode[:-1])
    fmt = Image.registered_extensions().get(suffix)
    if fmt is None:
        raise ValueError(f"cannot write images ending in {suffix!r}")
    buf = io.BytesIO()
    kwargs = {"quality": JPEG_QUALITY} if fmt in ("JPEG", "WEBP") else {}
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def as_written(image: LoadedImage, suffix: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB: ``image`` as a reader gets it back from the file that
    :func:`encode_image` writes for ``suffix`` (JPEG and WebP are lossy; a grayscale source
    comes back as its luma). What the judges score before an image is released."""
    return decoded(encode_image(image, suffix))


def decoded(data: bytes) -> np.ndarray:
    """(H, W, 3) uint8 RGB: the image file ``data`` (as :func:`encode_image` writes it) as a
    reader gets it back."""
    import io

    with Image.open(io.BytesIO(data)) as im:
        return _to_rgb(im).rgb


def _is_gray(rgb: np.ndarray) -> bool:
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def _luma(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb, "RGB").convert("L"))


def records_dir(outdir: os.PathLike | str) -> Path:
    """Where the private records of the outputs under ``outdir`` live: ``OUTDIR.private``
    beside it, outside the output tree that is released (docs/architecture.md)."""
    outdir = Path(outdir)
    return outdir.parent / f"{outdir.name}.private"


def record_path(anon_path: os.PathLike | str, rel: str) -> Path:
    """The private record ``OUTDIR.private/REL.json`` of the output ``OUTDIR/REL``."""
    root = Path(anon_path)
    for _ in Path(rel).parts:
        root = root.parent
    return records_dir(root) / f"{rel}.json"


def atomic_write(path: os.PathLike | str, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_file`, so ``path`` either keeps its old
    content or holds all of the new."""
    with atomic_file(path, mode) as tmp:
        tmp.write_bytes(data)


@contextmanager
def atomic_file(path: os.PathLike | str, mode: int | None = None) -> Iterator[Path]:
    """Yield the temporary file ``.<name>.tmp`` beside ``path`` (created empty) for the body to
    write by its path; when the body returns, the file is synced to disk and renamed to ``path``,
    so ``path`` either keeps its old content or holds all of the new; when it raises, the
    temporary file is removed and ``path`` is untouched. ``mode`` defaults to 0o666 less the
    process umask, as for any new file.

    Writers of one path take turns (an exclusive lock on the temporary file, released by the
    kernel when a writer dies), so a temporary file left by a writer that was killed, even with
    SIGKILL, is taken over and renamed by the next write of the same path: a rerun that redoes
    the interrupted file leaves none behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = _lock_temporary(tmp)
    try:
        os.ftruncate(fd, 0)
        os.fchmod(fd, 0o666 & ~_umask() if mode is None else mode)
        yield tmp
        os.fsync(fd)  # the file's data, whichever descriptor the body wrote it through
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # still ours: the lock is held
        raise
    finally:
        os.close(fd)


def _lock_temporary(tmp: Path) -> int:
    """An open descriptor of ``tmp`` (created when absent) holding its exclusive lock; waits
    for a live writer of the same path, and opens again when that writer renamed the file away
    while this one waited."""
    while True:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.stat(tmp).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
