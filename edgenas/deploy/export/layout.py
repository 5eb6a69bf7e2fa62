"""The export folder's layout: the one owner of the names of the files in ``RUN_DIR/export/``.

Export, bench, evaluate, parity and the report read these; the device kit cannot import edgenas,
so it keeps its own copy (``edgenas_kit.LAYOUT``, ``DEFAULT_MODELS``), checked against this by
``tests/test_layers.py``. Which file a format or a runtime uses: ``formats.FORMATS`` (``file``),
``formats.file_for_runtime``.
"""

from __future__ import annotations

from pathlib import Path

EXPORT_DIR = "export"  # RUN_DIR/export/ (not to be confused with the kit's source folder export/ of this repository)
ONNX = "model.onnx"  # the checked float32 export every other format is built from
ONNX_INT8 = "model.int8.onnx"  # ONNX Runtime's INT8 (QDQ) file
ENGINE = "model.engine"  # a TensorRT engine (fp16 or int8)
TFLITE, TFLITE_INT8 = "model.tflite", "model.int8.tflite"  # LiteRT (NHWC input; INT8: int8 input and output)
PTE, PTE_INT8 = "model.pte", "model.int8.pte"  # ExecuTorch programs (XNNPACK)
OPENVINO, OPENVINO_INT8 = "model.xml", "model.int8.xml"  # OpenVINO IRs, each with its .bin beside it
NCNN = "model.ncnn.param"  # ncnn, with model.ncnn.bin beside it
TFLM = (
    "tflm/model.tflite"  # TFLM: full-integer INT8 .tflite with its firmware bundle in tflm/ (deploy/export/firmware.py)
)
# Each LiteRT/ExecuTorch/OpenVINO/ncnn file has its metadata beside it: <file>.json (edgenas_engines.metadata_path)
BENCH_ALL = "bench-all.json"  # `edgenas bench RUN_DIR --runtime all`: every runtime's timing in one table
SAMPLES = "samples.npz"  # held-out inputs and PyTorch's outputs on them, for `edgenas_kit.py check`
PARITY = "parity.json"  # each format's figures against PyTorch
KIT = "edgenas_kit.py"
KIT_FILES = (KIT, "edgenas_env.py", "edgenas_serve.py", "edgenas_engines.py")  # the kit, its bench-conditions
# probe, its server and its runners of LiteRT, ExecuTorch, OpenVINO and ncnn
EVALUATE_SUFFIX = (
    ".evaluate.json"  # model.int8.onnx -> model.int8.evaluate.json, model.tflite -> model.tflite.evaluate.json
)


def export_dir(run_path: str | Path) -> Path:
    return Path(run_path) / EXPORT_DIR


def evaluate_json(model: str | Path) -> Path:
    """Where ``edgenas evaluate`` writes the figures of ``model`` by default: beside it, ``<stem>.evaluate.json``
    for ONNX files, ``<name>.evaluate.json`` for the others (model.tflite, model.pte and model.xml share a stem)."""
    model = Path(model)
    base = model.name.rsplit(".", 1)[0] if model.suffix == ".onnx" else model.name
    return model.with_name(base + EVALUATE_SUFFIX)
