"""The runtimes a model can be timed and run on: the one table that profiles, latency, bench and export read.

The device kit (``export/edgenas_kit.py``) cannot import edgenas, so it keeps its own table of the
runtimes it runs; ``tests/test_layers.py`` checks that it agrees with this one. How each runtime
converts, runs and says its version is its plug-in in ``edgenas/runtime/backend.py`` (``BACKENDS``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Runtime:
    name: str
    engine: str  # "onnxruntime" | "tensorrt" | "torch": who runs the model
    suffix: str  # the artifact its backend writes (torch: a torch.export program; bench runs a run directory)
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
    Runtime("torch-cpu", "torch", ".pt2", False, "pip install torch"),
    Runtime("torch-cuda", "torch", ".pt2", True, "pip install torch (a CUDA build)"),
)}
CPU_RUNTIMES = tuple(name for name, r in RUNTIMES.items() if not r.needs_gpu)
