"""Hands: where a hand crosses a face, so the pipeline keeps it in front of the new face.

A hand has the face's own skin colour, which the colour occluder test
(:func:`~fiftyone_faceanon.faces.occluder_mask`) cannot tell from the face. MediaPipe Hands'
two networks find it instead (shipped in ``models/``, Apache-2.0, from the ``mediapipe`` wheel:
``scripts/fetch_mediapipe_models.py``), run with LiteRT (:mod:`~fiftyone_faceanon.litert`):

1. **Palm detection** (192x192 RGB in [0, 1], the image letterboxed): an SSD over 2016 anchors
   (:func:`palm_anchors`) regressing a box and 7 keypoints per anchor, scored by a sigmoid;
   boxes at or above :data:`PALM_SCORE` go through non-maximum suppression (torchvision's NMS).
2. **Hand landmarks** (224x224): each palm's square is rotated upright (wrist, keypoint 0, below
   the middle finger's knuckle, keypoint 2), shifted half a palm towards the fingers and grown
   2.6x, as MediaPipe does (:func:`hand_roi`); the network gives 21 landmarks and a presence
   probability, kept at or above :data:`PRESENCE`.
3. **Mask** (:func:`hand_mask`): the palm polygon and each finger's bones drawn as strokes as
   wide as the spacing of the knuckles.

On LFW DevTest's first 500 images (docs/donors.md) the thresholds keep real hands at the chin,
mouth and cheek and drop the false palms that the detector scores on jaws and cheeks (0.5-0.7).
"""

from __future__ import annotations

import cv2
import numpy as np

from .litert import run

PALM_MODEL = "palm_detection_full.tflite"
LANDMARK_MODEL = "hand_landmark_full.tflite"
#: Palm detector input side and the hand landmark network's.
PALM_SIZE, HAND_SIZE = 192, 224
#: Lowest palm score (sigmoid) and hand presence probability that count as a hand.
PALM_SCORE, PRESENCE = 0.75, 0.9
#: Overlap (IoU) above which the weaker of two palm boxes is dropped.
PALM_NMS = 0.3
#: MediaPipe's hand region from a palm box: grown this much, shifted by this much of its height
#: towards the fingers.
ROI_SCALE, ROI_SHIFT = 2.6, 0.5
#: The palm's outline and each finger's chain of the 21 landmarks (MediaPipe's numbering).
PALM = (0, 1, 5, 9, 13, 17)
FINGERS = ((1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16), (17, 18, 19, 20))


def palm_anchors() -> np.ndarray:
    """(2016, 2) anchor centres of the palm detector in [0, 1], (x, y): 2 per cell of its 24x24
    stride-8 grid, then 6 per cell of its 12x12 stride-16 grid, row by row."""
    out = []
    for stride, per_cell in ((8, 2), (16, 6)):
        n = PALM_SIZE // stride
        ys, xs = np.mgrid[0:n, 0:n]
        centres = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32)
        out.append(np.repeat((centres + 0.5) / n, per_cell, axis=0))
    return np.concatenate(out)


def detect_palms(image: np.ndarray) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """Palms in an (H, W, 3) uint8 RGB image: ``(box (4,) x0 y0 x1 y1, score, keypoints (7, 2))``
    in image pixels, scores at or above :data:`PALM_SCORE`, best first.

    Decoding (MediaPipe's): with anchor centre ``a`` and raw outputs ``r`` divided by 192, the box
    centre is ``a + r[0:2]``, its size ``r[2:4]``, keypoint k at ``a + r[4+2k : 6+2k]``, in the
    letterboxed square."""
    import torch
    from torchvision.ops import nms

    h, w = image.shape[:2]
    side = max(h, w)
    ox, oy = (side - w) // 2, (side - h) // 2
    square = np.zeros((side, side, 3), np.uint8)
    square[oy:oy + h, ox:ox + w] = image
    x = cv2.resize(square, (PALM_SIZE, PALM_SIZE), interpolation=cv2.INTER_AREA)
    raw, logits = run(PALM_MODEL, x.astype(np.float32) / 255.0)
    score = 1.0 / (1.0 + np.exp(-np.clip(logits[:, 0], -100.0, 100.0)))
    keep = score >= PALM_SCORE
    raw, score, anchors = raw[keep] / PALM_SIZE, score[keep], palm_anchors()[keep]
    centre, size = anchors + raw[:, :2], raw[:, 2:4]
    boxes = np.concatenate([centre - size / 2, centre + size / 2], 1)
    keypoints = raw[:, 4:].reshape(-1, 7, 2) + anchors[:, None]
    order = nms(torch.from_numpy(boxes), torch.from_numpy(score), PALM_NMS).numpy()
    shift = np.array([ox, oy], np.float32)
    return [((boxes[i].reshape(2, 2) * side - shift).ravel(), float(score[i]),
             keypoints[i] * side - shift) for i in order]


def hand_roi(box: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """(3, 2) image-pixel corners (top-left, top-right, bottom-left) of the square the hand
    landmark network sees for one palm: the box rotated so that keypoint 0 (wrist) lies below
    keypoint 2 (middle finger's knuckle), moved :data:`ROI_SHIFT` of its height towards the
    fingers and grown :data:`ROI_SCALE` times its longer side."""
    up = keypoints[2] - keypoints[0]
    angle = np.pi / 2 - np.arctan2(-up[1], up[0])
    c, s = np.cos(angle), np.sin(angle)
    axes = np.array([[c, s], [-s, c]])  # rows: the square's x and y axes in the image
    width, height = box[2] - box[0], box[3] - box[1]
    centre = (box[:2] + box[2:]) / 2 - ROI_SHIFT * height * axes[1]
    half = ROI_SCALE * max(width, height) / 2
    return np.stack([centre - half * axes[0] - half * axes[1],
                     centre + half * axes[0] - half * axes[1],
                     centre - half * axes[0] + half * axes[1]])


def hand_landmarks(image: np.ndarray, roi: np.ndarray) -> tuple[np.ndarray, float]:
    """The 21 hand landmarks (21, 2), image pixels, and the presence probability of a hand in
    the (3, 2) ``roi`` of :func:`hand_roi` of an (H, W, 3) uint8 RGB image."""
    square = np.float32([[0, 0], [HAND_SIZE, 0], [0, HAND_SIZE]])
    to_roi = cv2.getAffineTransform(roi.astype(np.float32), square)
    crop = cv2.warpAffine(image, to_roi, (HAND_SIZE, HAND_SIZE), flags=cv2.INTER_LINEAR)
    points, presence, _, _ = run(LANDMARK_MODEL, crop.astype(np.float32) / 255.0)
    back = cv2.invertAffineTransform(to_roi)
    return points.reshape(21, 3)[:, :2] @ back[:, :2].T + back[:, 2], float(presence[0])


def find_hands(image: np.ndarray) -> list[np.ndarray]:
    """Every hand in an (H, W, 3) uint8 RGB image whose palm and presence pass the thresholds:
    its (21, 2) landmarks in image pixels."""
    hands = []
    for box, _, keypoints in detect_palms(image):
        points, presence = hand_landmarks(image, hand_roi(box, keypoints))
        if presence >= PRESENCE:
            hands.append(points)
    return hands


def hand_mask(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool pixels of one hand from its (21, 2) landmarks: the palm polygon, and each
    finger's bones as strokes as wide as the mean spacing of the four finger knuckles (points
    5, 9, 13, 17), round at the joints."""
    mask = np.zeros(shape, np.uint8)
    knuckles = points[[5, 9, 13, 17]]
    width = max(2, int(round(np.linalg.norm(np.diff(knuckles, axis=0), axis=1).mean())))
    pts = np.round(points).astype(np.int32)
    cv2.fillConvexPoly(mask, cv2.convexHull(pts[list(PALM)]), 1)
    for finger in FINGERS:
        for a, b in zip(finger[:-1], finger[1:]):
            cv2.line(mask, tuple(map(int, pts[a])), tuple(map(int, pts[b])), 1, width)
        for joint in finger:
            cv2.circle(mask, tuple(map(int, pts[joint])), width // 2, 1, -1)
    return mask.astype(bool)


def hands_mask(image: np.ndarray) -> np.ndarray:
    """(H, W) bool: the pixels of every hand :func:`find_hands` finds in an (H, W, 3) uint8 RGB
    image."""
    mask = np.zeros(image.shape[:2], bool)
    for points in find_hands(image):
        mask |= hand_mask(points, image.shape[:2])
    return mask
