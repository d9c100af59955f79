"""dlib's face recognition ResNet (``dlib_face_recognition_resnet_model_v1``) as a torch module.

The network of dlib's ``dnn_face_recognition_ex.cpp``, 128-D, read from the
``face-recognition-models`` package's ``.dat`` file by :func:`read_dlib_resnet` (numpy only):

- input ``input_rgb_image_sized<150>``: ``(pixel - mean) / 256`` per RGB channel, the means
  read from the file (122.782, 117.001, 104.298);
- ``con<32,7,7,2,2>`` -> ``affine`` -> ``relu`` -> ``max_pool<3,3,2,2>``;
- residual blocks (:data:`RESIDUAL`): level 4 = 3 x ``ares<32>``, level 3 = ``ares_down<64>``
  + 3 x ``ares<64>``, level 2 = ``ares_down<128>`` + 2 x ``ares<128>``, level 1 =
  ``ares_down<256>`` + 2 x ``ares<256>``, level 0 = ``ares_down<256>``;
- global average pool and ``fc_no_bias<128>``.

``ares<N>`` is ``relu(block(x) + x)`` and ``ares_down<N>`` ``relu(block(x) + avg_pool<2,2,2,2>(x))``
with ``block`` = ``con<N,3,3,s,s>`` -> ``affine`` -> ``relu`` -> ``con<N,3,3,1,1>`` -> ``affine``.
dlib pads a convolution or pooling by ``kernel // 2`` when its stride is 1 and not at all
otherwise, and its ``add_prev`` adds inputs of different shapes by zero-padding each to the larger
size per dimension (top-left aligned): 32 -> 64 channels at level 3, and at level 1 the 3 x 3
block output onto the 4 x 4 pooled input. Spatial sizes: 150, 72, 35, 35, 17, 8, 4, 2.

The serialized net is walked from the input layer upwards; every learnable layer's parameters
are one dlib ``tensor`` (``int 2``, then ``num_samples, k, nr, nc`` as dlib ints, then raw
little-endian float32) right after the layer's name (``fc_2``: after its output and input
counts); each convolution's and pooling's geometry (size, stride, padding) follows and is
checked against the architecture. :func:`dlib_descriptors` is dlib's own computation, the
reference the module is tested against.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
CHIP_SIZE = 150
DIM = 128
#: (output channels, stride) of the residual blocks from the input upwards (levels 4 to 0);
#: stride 2 is an ``ares_down``.
RESIDUAL = (((32, 1),) * 3 + ((64, 2),) + ((64, 1),) * 3 + ((128, 2),) + ((128, 1),) * 2
            + ((256, 2),) + ((256, 1),) * 2 + ((256, 2),))
#: Names of the layers whose details the reader consumes; none may be skipped over.
_LAYERS = ("con_4", "affine_", "max_pool_2", "avg_pool_2", "fc_2")


class DlibModelError(RuntimeError):
    """The ``.dat`` file is not the expected dlib face recognition ResNet."""


def _dlib_int(value: int) -> bytes:
    """dlib's serialization of an int: a byte count (0x80 set when negative), then the
    magnitude's little-endian bytes."""
    magnitude = abs(value).to_bytes((abs(value).bit_length() + 7) // 8, "little")
    return bytes([len(magnitude) | (0x80 if value < 0 else 0)]) + magnitude


def _dlib_string(text: str) -> bytes:
    return _dlib_int(len(text)) + text.encode()


class _Reader:
    """A cursor over the bytes of a serialized dlib net; every failure names the file."""

    def __init__(self, path: Path):
        self.path = path
        self.data = path.read_bytes()
        self.pos = 0

    def fail(self, what: str) -> DlibModelError:
        return DlibModelError(f"{self.path}: not dlib's face recognition ResNet v1 ({what}, at "
                              f"byte {self.pos} of {len(self.data)}; truncated or corrupted?)")

    def _check_no_layer(self, start: int, end: int) -> None:
        for name in _LAYERS:
            if _dlib_string(name) in self.data[start:end]:
                self.pos = start
                raise self.fail(f"unexpected layer {name!r}")

    def seek(self, name: str) -> None:
        """Move just past the next serialized ``name``; no expected layer may lie before it."""
        found = self.data.find(_dlib_string(name), self.pos)
        if found < 0:
            raise self.fail(f"layer {name!r} not found")
        self._check_no_layer(self.pos, found)
        self.pos = found + len(_dlib_string(name))

    def read_int(self) -> int:
        if self.pos >= len(self.data):
            raise self.fail("unexpected end of file")
        head = self.data[self.pos]
        size = head & 0x7F
        raw = self.data[self.pos + 1 : self.pos + 1 + size]
        if size > 8 or len(raw) != size:
            raise self.fail(f"bad integer header {head:#x}")
        self.pos += 1 + size
        value = int.from_bytes(raw, "little")
        return -value if head & 0x80 else value

    def read_float(self) -> float:
        """dlib's portable float: mantissa and base-2 exponent, two dlib ints."""
        mantissa = self.read_int()
        return float(mantissa * 2.0 ** self.read_int())

    def expect(self, what: str, *values: int) -> None:
        start = self.pos
        found = tuple(self.read_int() for _ in values)
        if found != values:
            self.pos = start
            raise self.fail(f"{what}: expected {values}, found {found}")

    def tensor(self, what: str, shape: tuple[int, int, int, int]) -> np.ndarray:
        """A dlib ``tensor`` of the given (num_samples, k, nr, nc), as float32 of that shape."""
        self.expect(f"{what} tensor header", 2, *shape)
        end = self.pos + 4 * int(np.prod(shape))
        if end > len(self.data):
            raise self.fail(f"{what}: tensor runs past the end of the file")
        values = np.frombuffer(self.data, "<f4", int(np.prod(shape)), self.pos).reshape(shape)
        if not np.isfinite(values).all():
            raise self.fail(f"{what}: non-finite parameters")
        self.pos = end
        return values.astype(np.float32)

    def finish(self) -> None:
        """Nothing but parameter-free details (at most 1 KiB) may follow the last layer."""
        if len(self.data) - self.pos > 1024:
            raise self.fail(f"{len(self.data) - self.pos} unread bytes after the last layer")
        self._check_no_layer(self.pos, len(self.data))


def read_dlib_resnet(path: Path) -> dict[str, torch.Tensor]:
    """The :class:`DlibResNet` state dict from dlib's serialized net at ``path``.

    Raises :class:`DlibModelError` naming the file when a layer, a tensor header, a geometry or
    the file's length does not match the architecture, or a parameter is not finite.
    """
    r = _Reader(Path(path))
    state: dict[str, np.ndarray] = {}

    def con(prefix: str, cin: int, cout: int, kernel: int, stride: int) -> None:
        r.seek("con_4")
        params = r.tensor(prefix, (cout * cin * kernel * kernel + cout, 1, 1, 1)).ravel()
        state[f"{prefix}.weight"] = params[: -cout].reshape(cout, cin, kernel, kernel)
        state[f"{prefix}.bias"] = params[-cout:]
        pad = kernel // 2 if stride == 1 else 0
        r.expect(f"{prefix} geometry", cout, kernel, kernel, stride, stride, pad, pad)

    def affine(prefix: str, channels: int) -> None:
        r.seek("affine_")
        params = r.tensor(prefix, (2 * channels, 1, 1, 1)).reshape(2, 1, channels, 1, 1)
        state[f"{prefix}.gamma"], state[f"{prefix}.beta"] = params

    def pool(name: str, *geometry: int) -> None:
        r.seek(name)
        r.expect(f"{name} geometry", *geometry)

    r.seek("input_rgb_image_sized")
    state["mean"] = np.array([r.read_float() for _ in range(3)], np.float32).reshape(1, 3, 1, 1)
    r.expect("input size", CHIP_SIZE, CHIP_SIZE)
    con("conv", 3, 32, 7, 2)
    affine("affine", 32)
    pool("max_pool_2", 3, 3, 2, 2, 0, 0)
    cin = 32
    for i, (cout, stride) in enumerate(RESIDUAL):
        con(f"blocks.{i}.conv1", cin, cout, 3, stride)
        affine(f"blocks.{i}.affine1", cout)
        con(f"blocks.{i}.conv2", cout, cout, 3, 1)
        affine(f"blocks.{i}.affine2", cout)
        if stride == 2:
            pool("avg_pool_2", 2, 2, 2, 2, 0, 0)
        cin = cout
    pool("avg_pool_2", 0, 0, 1, 1, 0, 0)  # 0 x 0 window: the mean over everything
    r.seek("fc_2")
    r.expect("fc_2 outputs, inputs", DIM, cin)
    state["fc.weight"] = r.tensor("fc_2", (cin, DIM, 1, 1)).reshape(cin, DIM).T
    r.finish()
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}


def add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: (N, C1, H1, W1) + (N, C2, H2, W2) -> (N, max C, max H, max W), each
    input zero-padded after its end in every dimension."""
    size = [max(p, q) for p, q in zip(a.shape[1:], b.shape[1:])]

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, size[2] - t.shape[3], 0, size[1] - t.shape[2], 0, size[0] - t.shape[1]))

    return pad(a) + pad(b)


class Affine(nn.Module):
    """dlib's ``affine`` in convolution mode: ``gamma[c] x + beta[c]`` on (N, C, H, W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("gamma", torch.ones(1, channels, 1, 1))
        self.register_buffer("beta", torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma + self.beta


class Residual(nn.Module):
    """``ares<cout>`` (stride 1) or ``ares_down<cout>`` (stride 2): (N, cin, H, W) -> (N, cout,
    H', W'), H' = H for stride 1, else max((H - 3) // 2 + 1, H // 2)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1 if stride == 1 else 0)
        self.affine1 = Affine(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.affine2 = Affine(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        return F.relu(add_prev(y, F.avg_pool2d(x, 2, 2) if self.stride == 2 else x))


class DlibResNet(nn.Module):
    """(N, 3, 150, 150) float RGB chips in [0, 255] -> (N, 128) face descriptors (dlib's output,
    not normalised)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, 3, 1, 1))
        self.conv = nn.Conv2d(3, 32, 7, 2)
        self.affine = Affine(32)
        channels = [32] + [c for c, _ in RESIDUAL]
        self.blocks = nn.Sequential(*(Residual(cin, cout, stride) for cin, (cout, stride)
                                      in zip(channels, RESIDUAL)))
        self.fc = nn.Linear(channels[-1], DIM, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / 256.0
        x = F.max_pool2d(F.relu(self.affine(self.conv(x))), 3, 2)
        return self.fc(self.blocks(x).mean(dim=(2, 3)))


def load_dlib_resnet(path: Path) -> DlibResNet:
    """:class:`DlibResNet` in eval mode with the weights of dlib's ``.dat`` file at ``path``."""
    model = DlibResNet()
    model.load_state_dict(read_dlib_resnet(path))
    return model.eval()


def chips_tensor(chips: list[np.ndarray]) -> torch.Tensor:
    """F (150, 150, 3) uint8 RGB chips -> (F, 3, 150, 150) float32 tensor in [0, 255]."""
    x = torch.from_numpy(np.stack([np.asarray(c, np.uint8) for c in chips]))
    return x.permute(0, 3, 1, 2).float()


def dlib_descriptors(path: Path, chips: list[np.ndarray]) -> np.ndarray:
    """(F, 128) float32 descriptors of F chips by dlib itself
    (``face_recognition_model_v1(path).compute_face_descriptor``): the reference the torch
    module is tested against."""
    import dlib

    model = dlib.face_recognition_model_v1(str(path))
    return np.array(model.compute_face_descriptor(chips), np.float32).reshape(len(chips), DIM)
