"""The runtimes a model can be timed and run on: the one table that profiles, latency, bench and export read.

The device kit (``export/edgenas_kit.py``) cannot import edgenas, so it keeps its own table of the
runtimes it runs; ``tests/test_layers.py`` checks that it agrees with this one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Runtime:
    name: str
    engine: str  # "onnxruntime" | "tensorrt" | "torch" | "litert" | "executorch" | "openvino" | "ncnn"
    suffix: str  # the model file it runs (torch: a run directory's model.pt)
    needs_gpu: bool
    install: str  # how to get the engine
    precision: str = "fp32"  # "fp32" | "fp16" | "int8": what the runtime computes in


RUNTIMES = {r.name: r for r in (
    Runtime("onnxruntime-cpu", "onnxruntime", ".onnx", False, "pip install onnxruntime"),
    # ONNX Runtime's CPU provider on an INT8 (QDQ) file: model.int8.onnx; a budget times each candidate quantised
    Runtime("onnxruntime-cpu-int8", "onnxruntime", ".onnx", False, "pip install onnxruntime", "int8"),
    Runtime("onnxruntime-cuda", "onnxruntime", ".onnx", True, "pip install onnxruntime-gpu"),
    Runtime("tensorrt-fp16", "tensorrt", ".engine", True, "pip install tensorrt", "fp16"),
    Runtime("tensorrt-int8", "tensorrt", ".engine", True, "pip install tensorrt", "int8"),
    Runtime("torch-cpu", "torch", ".pt", False, "pip install torch"),
    Runtime("torch-cuda", "torch", ".pt", True, "pip install torch (a CUDA build)"),
    # LiteRT (ai-edge-litert) on XNNPACK; files converted by litert-torch, NHWC input; INT8: PT2E, int8 in and out
    Runtime("litert-cpu", "litert", ".tflite", False, "pip install edgenas[litert]"),
    Runtime("litert-int8", "litert", ".tflite", False, "pip install edgenas[litert]", "int8"),
    # ExecuTorch's XNNPACK delegate; INT8: PT2E with the XNNPACK quantiser
    Runtime("executorch-cpu", "executorch", ".pte", False, "pip install edgenas[executorch]"),
    Runtime("executorch-int8", "executorch", ".pte", False, "pip install edgenas[executorch]", "int8"),
    # OpenVINO's CPU plugin in f32 on an uncompressed IR; INT8: NNCF post-training quantisation
    Runtime("openvino-cpu", "openvino", ".xml", False, "pip install edgenas[openvino]"),
    Runtime("openvino-int8", "openvino", ".xml", False, "pip install edgenas[openvino]", "int8"),
    # ncnn (converted by pnnx) with fp16 storage off; no INT8 path in the pip wheels
    Runtime("ncnn-cpu", "ncnn", ".ncnn.param", False, "pip install edgenas[ncnn]"),
)}
CPU_RUNTIMES = tuple(name for name, r in RUNTIMES.items() if not r.needs_gpu)
