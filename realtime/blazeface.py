"""BlazeFace on LiteRT: MediaPipe's face detection models without MediaPipe's native graph.

The Raspberry Pi 4's Cortex-A72 lacks the ARMv8.1 atomics that the mediapipe wheel is compiled
for (it dies with SIGILL when its detector starts), and MediaPipe Tasks costs about twice the
model's own inference time per frame. This module runs the same two bundled models
(``face_detection_short_range.tflite``, 128 x 128; ``face_detection_full_range_sparse.tflite``,
192 x 192) on the LiteRT interpreter and reproduces MediaPipe's pre- and post-processing, as
configured in MediaPipe's face detection graphs (``face_detection_short_range.pbtxt``,
``face_detection_full_range.pbtxt``, ``SsdAnchorsCalculator``, ``TensorsToDetectionsCalculator``
and the weighted ``NonMaxSuppressionCalculator``):

1. the frame is letterboxed into the model's square input, aspect ratio kept, zero border,
   bilinear resampling, then turned into RGB values in [-1, 1] (converting after the warp costs
   the same and touches 192 x 192 pixels instead of the whole frame);
2. SSD anchors are generated for the model's options (both use fixed-size anchors: only the
   centres matter);
3. each anchor's 16 regressors decode to a box centre and size plus 6 keypoints, relative to the
   anchor centre and scaled by the input size; scores are clipped to +-100 and passed through a
   sigmoid; anchors below the minimum score are dropped;
4. weighted non-maximum suppression (IoU > 0.3) averages each cluster's boxes and keypoints by
   score and keeps the cluster's top score;
5. boxes and keypoints are mapped from the letterboxed input back to frame pixels.

The option sets are chosen by the number of boxes the model outputs (896 or 2304), so the wrapper
reads everything else (input size, output layout) from the model itself.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .detection import Detection, to_detection
from .errors import ModelError
from .litert import load_interpreter

log = logging.getLogger(__name__)

NUM_KEYPOINTS = 6
NUM_COORDS = 4 + 2 * NUM_KEYPOINTS
SCORE_CLIP = 100.0


@dataclass(frozen=True)
class AnchorOptions:
    """The parts of MediaPipe's ``SsdAnchorsCalculatorOptions`` that the face models use."""

    strides: tuple[int, ...]
    interpolated_scale_aspect_ratio: float
    min_scale: float = 0.1484375
    max_scale: float = 0.75
    anchor_offset: float = 0.5
    aspect_ratios: tuple[float, ...] = (1.0,)
    fixed_anchor_size: bool = True


# face_detection_short_range.pbtxt: 4 layers, strides 8/16/16/16, 2 + 6 anchors per cell -> 896.
SHORT_RANGE = AnchorOptions(strides=(8, 16, 16, 16), interpolated_scale_aspect_ratio=1.0)
# face_detection_full_range.pbtxt: 1 layer, stride 4, one anchor per cell -> 2304 at 192 px.
FULL_RANGE = AnchorOptions(strides=(4,), interpolated_scale_aspect_ratio=0.0)
KNOWN_OPTIONS = (SHORT_RANGE, FULL_RANGE)


def _scale(min_scale: float, max_scale: float, index: int, count: int) -> float:
    if count == 1:
        return (min_scale + max_scale) / 2.0
    return min_scale + (max_scale - min_scale) * index / (count - 1.0)


def ssd_anchors(input_height: int, input_width: int, opts: AnchorOptions) -> np.ndarray:
    """Anchors as an ``N x 4`` float32 array of ``(x_centre, y_centre, width, height)``,
    normalised to the input, in MediaPipe's order (layer, row, column, anchor)."""
    anchors: list[tuple[float, float, float, float]] = []
    layer = 0
    n_layers = len(opts.strides)
    while layer < n_layers:
        heights: list[float] = []
        widths: list[float] = []
        last = layer
        # Layers that share a stride share one feature map: their anchors are put together.
        while last < n_layers and opts.strides[last] == opts.strides[layer]:
            scale = _scale(opts.min_scale, opts.max_scale, last, n_layers)
            for ratio in opts.aspect_ratios:
                heights.append(scale / math.sqrt(ratio))
                widths.append(scale * math.sqrt(ratio))
            if opts.interpolated_scale_aspect_ratio > 0.0:
                nxt = 1.0 if last == n_layers - 1 else _scale(opts.min_scale, opts.max_scale, last + 1, n_layers)
                interp = math.sqrt(scale * nxt)
                ratio = opts.interpolated_scale_aspect_ratio
                heights.append(interp / math.sqrt(ratio))
                widths.append(interp * math.sqrt(ratio))
            last += 1
        stride = opts.strides[layer]
        rows = math.ceil(input_height / stride)
        cols = math.ceil(input_width / stride)
        for y in range(rows):
            for x in range(cols):
                xc = (x + opts.anchor_offset) / cols
                yc = (y + opts.anchor_offset) / rows
                for w, h in zip(widths, heights, strict=True):
                    anchors.append((xc, yc, 1.0, 1.0) if opts.fixed_anchor_size else (xc, yc, w, h))
        layer = last
    return np.asarray(anchors, dtype=np.float32)


def decode_boxes(raw: np.ndarray, anchors: np.ndarray, input_size: tuple[int, int]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Regressors ``N x 16`` → boxes ``N x 4`` ``(xmin, ymin, xmax, ymax)`` and keypoints
    ``N x 6 x 2``, normalised to the model input (MediaPipe's ``reverse_output_order``: x first)."""
    height, width = input_size
    scale = np.array([width, height], np.float32)
    centres = anchors[:, None, :2]
    sizes = anchors[:, None, 2:4]
    pts = raw[:, : NUM_COORDS].reshape(-1, 2 + NUM_KEYPOINTS, 2) / scale  # rows: centre, size, kps
    centre = pts[:, 0:1] * sizes + centres
    half = pts[:, 1:2] * sizes / 2.0
    boxes = np.concatenate([centre - half, centre + half], axis=1).reshape(-1, 4)
    keypoints = pts[:, 2:] * sizes + centres
    return boxes, keypoints


def sigmoid_scores(raw: np.ndarray) -> np.ndarray:
    """Logits clipped to +-100 (MediaPipe's ``score_clipping_thresh``), then a sigmoid."""
    logits = np.clip(raw.reshape(-1).astype(np.float64), -SCORE_CLIP, SCORE_CLIP)
    return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one ``(xmin, ymin, xmax, ymax)`` box with each of ``boxes``."""
    ix0 = np.maximum(box[0], boxes[:, 0])
    iy0 = np.maximum(box[1], boxes[:, 1])
    ix1 = np.minimum(box[2], boxes[:, 2])
    iy1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, threshold: float
                 ) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's weighted non-maximum suppression.

    Take the best remaining detection; every remaining detection whose IoU with it is above
    ``threshold`` (itself included) joins its cluster; the output box and keypoints are the
    score-weighted mean of the cluster, with the best detection's score. Repeat on the rest.
    """
    order = np.argsort(-scores, kind="stable")
    out = []
    while order.size:
        top = order[0]
        overlap = box_iou(boxes[top], boxes[order])
        members = order[overlap > threshold]
        rest = order[overlap <= threshold]
        if members.size == 0:  # a degenerate box that does not overlap itself
            members = order[:1]
            rest = order[1:]
        weights = scores[members][:, None]
        total = float(weights.sum())
        box = (boxes[members] * weights).sum(axis=0) / total
        kps = (keypoints[members] * weights[:, :, None]).sum(axis=0) / total
        out.append((box, kps, float(scores[top])))
        order = rest
    return out


def letterbox(frame: np.ndarray, size: tuple[int, int]
              ) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """The frame scaled into ``size`` (h, w) with its aspect ratio kept and a zero border, as
    MediaPipe's ``ImageToTensorCalculator`` (keep_aspect_ratio, BORDER_ZERO) does.

    Returns the uint8 image, the size ``(w, h)`` and the top-left corner ``(x, y)`` of the
    region of the frame (in frame pixels, may reach past the frame) that the input covers."""
    height, width = frame.shape[:2]
    in_h, in_w = size
    target_aspect = in_h / in_w
    roi_w, roi_h = float(width), float(height)
    if target_aspect > roi_h / roi_w:
        roi_h = roi_w * target_aspect
    else:
        roi_w = roi_h / target_aspect
    off_x = (width - roi_w) / 2.0
    off_y = (height - roi_h) / 2.0
    sx, sy = in_w / roi_w, in_h / roi_h
    matrix = np.array([[sx, 0.0, -off_x * sx], [0.0, sy, -off_y * sy]], np.float32)
    image = cv2.warpAffine(frame, matrix, (in_w, in_h), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    return image, (roi_w, roi_h), (off_x, off_y)


class BlazeFaceLiteRT:
    """A BlazeFace model of MediaPipe run on LiteRT; same ``detect`` contract as the MediaPipe
    backend (BGR uint8 in, :class:`Detection` list out, largest face first)."""

    backend = "litert"

    def __init__(self, model_path: str | Path, min_score: float = 0.5, min_suppression: float = 0.3,
                 num_threads: int | None = 2) -> None:
        self.model_path = Path(model_path)
        self.min_score = min_score
        self.min_suppression = min_suppression
        self._it = load_interpreter(self.model_path, num_threads)
        inputs = self._it.get_input_details()
        outputs = self._it.get_output_details()
        if len(inputs) != 1 or len(inputs[0]["shape"]) != 4 or len(outputs) != 2:
            raise ModelError(f"{self.model_path} is not a BlazeFace model "
                             "(expected 1 image input, 2 outputs)")
        inp = inputs[0]
        self._in_index = inp["index"]
        self.input_size = (int(inp["shape"][1]), int(inp["shape"][2]))
        if inp["dtype"] != np.float32:
            raise ModelError(f"{self.model_path} is not a BlazeFace model (expected a float32 input, "
                             f"got {inp['dtype'].__name__})")
        by_width = {int(d["shape"][-1]): d for d in outputs}
        if set(by_width) != {NUM_COORDS, 1}:
            raise ModelError(f"{self.model_path} is not a BlazeFace model (expected outputs of width "
                             f"{NUM_COORDS} and 1, got {sorted(by_width)})")
        self._box_index = by_width[NUM_COORDS]["index"]
        self._score_index = by_width[1]["index"]
        n_boxes = int(by_width[NUM_COORDS]["shape"][-2])
        self.anchors = self._anchors_for(n_boxes)

    def _anchors_for(self, n_boxes: int) -> np.ndarray:
        for opts in KNOWN_OPTIONS:
            anchors = ssd_anchors(*self.input_size, opts)
            if len(anchors) == n_boxes:
                return anchors
        raise ModelError(f"{self.model_path}: no known BlazeFace anchor layout gives {n_boxes} boxes "
                         f"at {self.input_size[1]}x{self.input_size[0]}")

    def detect(self, frame_bgr: np.ndarray, timestamp_ms: int | None = None) -> list[Detection]:
        """Faces in one BGR frame (``timestamp_ms`` is accepted for the common interface)."""
        height, width = frame_bgr.shape[:2]
        # Letterbox first, then convert the small image: RGB, [-1, 1].
        image, (roi_w, roi_h), (off_x, off_y) = letterbox(frame_bgr, self.input_size)
        tensor = image[None, :, :, ::-1].astype(np.float32)
        tensor *= 1.0 / 127.5
        tensor -= 1.0
        self._it.set_tensor(self._in_index, tensor)
        self._it.invoke()
        raw_scores = self._it.get_tensor(self._score_index)[0]
        scores = sigmoid_scores(raw_scores)
        keep = scores >= self.min_score
        if not keep.any():
            return []
        raw_boxes = self._it.get_tensor(self._box_index)[0][keep]
        boxes, keypoints = decode_boxes(raw_boxes, self.anchors[keep], self.input_size)
        faces = []
        for box, kps, score in weighted_nms(boxes, keypoints, scores[keep], self.min_suppression):
            # Letterboxed input (0..1) -> frame pixels.
            x0, y0 = box[0] * roi_w + off_x, box[1] * roi_h + off_y
            x1, y1 = box[2] * roi_w + off_x, box[3] * roi_h + off_y
            points = tuple((float(x * roi_w + off_x), float(y * roi_h + off_y)) for x, y in kps)
            # Pixel boxes truncate like MediaPipe's DetectionTransformationCalculator (static_cast<int>).
            pixel_box = tuple(int(float(v)) for v in (x0, y0, x1 - x0, y1 - y0))
            det = to_detection(pixel_box, score, points, width, height)
            if det is not None:
                faces.append(det)
        faces.sort(key=lambda d: d.area, reverse=True)
        return faces

    def close(self) -> None:
        self._it = None

    def __enter__(self) -> BlazeFaceLiteRT:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
