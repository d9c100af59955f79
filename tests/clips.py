"""Test clips made at test time (never stored): a virtual camera over a photo, a cross-fade
through photos, a clip carrying tags and a tone, and broken files.

Import from tests as ``from clips import pan_zoom_clip``. The photo clips are written with
:class:`~fiftyone_faceanon.videoio.VideoWriter`; :func:`tagged_clip` with PyAV directly, since the
writer keeps no tags.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageOps

from fiftyone_faceanon.videoio import VideoInfo, VideoWriter


def write_clip(frames: list[np.ndarray], dst: Path, fps: int, quality: int = 23) -> Path:
    """Write RGB ``frames``, (H, W, 3) uint8, to ``dst`` at ``fps`` (H.264 at CRF ``quality``:
    0 keeps the frames but for the YUV 4:2:0 conversion), without audio."""
    height, width = frames[0].shape[:2]
    info = VideoInfo(width=width, height=height, fps=Fraction(fps), frames=len(frames),
                     has_audio=False, codec="h264")
    with VideoWriter(dst, info, quality=quality) as writer:
        for frame in frames:
            writer.write(frame)
    return dst


def pan_zoom_clip(photo: Path, dst: Path, frames: int = 60, size: tuple[int, int] = (640, 360),
                  fps: int = 25) -> Path:
    """A virtual camera over ``photo``: from its whole width (black bars where the photo is
    shorter than the frame), centred, it zooms in to 35% of the width while its centre pans to
    70% of the width, so faces move and grow, and those on the left leave the frame."""
    image = Image.open(photo).convert("RGB")
    width, height = image.size

    def frame(t: float) -> np.ndarray:
        window = width * (1 - 0.65 * t)
        cx, cy = width * (0.5 + 0.2 * t), height / 2
        half_w, half_h = window / 2, window * size[1] / size[0] / 2
        box = (cx - half_w, cy - half_h, cx + half_w, cy + half_h)
        return np.asarray(image.transform(size, Image.Transform.EXTENT, box,
                                          Image.Resampling.BILINEAR))

    return write_clip([frame(i / (frames - 1)) for i in range(frames)], dst, fps)


def crossfade_clip(photos: list[Path], dst: Path, frames_per_photo: int = 20, fade: int = 8,
                   size: tuple[int, int] = (640, 360), fps: int = 25) -> Path:
    """``frames_per_photo`` frames of each of ``photos``, fitted into the frame with black bars,
    the last ``fade`` of them blending linearly into the next photo."""
    stills = [np.asarray(ImageOps.pad(Image.open(p).convert("RGB"), size, color=(0, 0, 0)),
                         np.float32) for p in photos]

    frames = []
    for k, still in enumerate(stills):
        after = stills[k + 1] if k + 1 < len(stills) else still
        for i in range(frames_per_photo):
            # the next photo's weight: 1 / (fade + 1) ... fade / (fade + 1) over the last frames
            into = max(0, i - (frames_per_photo - fade) + 1) / (fade + 1)
            frames.append(np.rint((1 - into) * still + into * after).astype(np.uint8))
    return write_clip(frames, dst, fps)


def tagged_clip(dst: Path, tags: dict[str, str], stream_tags: dict[str, str], frames: int = 30,
                size: tuple[int, int] = (320, 180), fps: int = 25, audio: str = "aac",
                video: bool = True) -> Path:
    """A clip of bars moving over a gradient (none when not ``video``) with a 440 Hz tone in
    ``audio`` (a PyAV encoder), ``frames / fps`` seconds long, ``tags`` on the container and
    ``stream_tags`` on its streams. An MP4/MOV gets ``movflags=use_metadata_tags``, which writes
    keys FFmpeg has no atom for as QuickTime ``mdta`` items
    (``com.apple.quicktime.location.ISO6709`` and the like)."""
    options = {"movflags": "use_metadata_tags"} if dst.suffix in (".mp4", ".mov") else {}
    with av.open(str(dst), "w", options=options) as out:
        out.metadata.update(tags)
        bars = out.add_stream("libx264", rate=fps) if video else None
        if bars is not None:
            bars.width, bars.height, bars.pix_fmt = size[0], size[1], "yuv420p"
        sound = out.add_stream(audio, rate=48_000, layout="mono")
        for stream in out.streams:
            stream.metadata.update(stream_tags)
        x, y = np.arange(size[0]), np.linspace(0, 70, size[1])
        samples, rate = 0, 48_000
        for i in range(frames):
            if bars is not None:
                row = (x + 7 * i) // 20 % 2 * 150 + 30
                rgb = (row[None, :, None] + y[:, None, None] * [0.6, 0.3, 0.1]).astype(np.uint8)
                out.mux(bars.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
            until = (i + 1) * rate // fps
            t = np.arange(samples, until) / rate
            tone = av.AudioFrame.from_ndarray(
                (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None], format="flt",
                layout="mono")
            tone.sample_rate, tone.pts, samples = rate, samples, until
            out.mux(sound.encode(tone))
        if bars is not None:
            out.mux(bars.encode(None))
        out.mux(sound.encode(None))
    return dst


def truncated_copy(src: Path, dst: Path, keep: float) -> Path:
    """The first ``keep`` (0-1) of ``src``'s bytes, as a download cut short leaves them."""
    data = src.read_bytes()
    dst.write_bytes(data[:int(len(data) * keep)])
    return dst


def cut_before_packet(src: Path, dst: Path, index: int) -> Path:
    """``src`` cut at the first byte of its video packet ``index``: whole packets, the rest
    missing (what the demuxer sees as a clean end of file)."""
    with av.open(str(src)) as container:
        positions = [packet.pos for packet in container.demux(video=0) if packet.size]
    dst.write_bytes(src.read_bytes()[:positions[index]])
    return dst


def empty_video(dst: Path) -> Path:
    """A zero-byte file named like a video."""
    dst.write_bytes(b"")
    return dst


def text_as_video(dst: Path) -> Path:
    """A text file named like a video."""
    dst.write_text("these are notes, not a video\n" * 20)
    return dst
