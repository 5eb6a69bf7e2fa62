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
    engine: str  # "onnxruntime" | "tensorrt" | "torch" | "litert" | "executorch" | "openvino" | "ncnn" | "tflm"
    suffix: str  # the artifact its backend writes (torch: a torch.export program; bench runs a run directory)
    needs_gpu: bool
    install: str  # how to get the engine
    precision: str = "fp32"  # "fp32" | "fp16" | "int8": what the runtime computes in (the only precision it runs)
    # What it can and cannot do, for the callers that must know:
    in_kit: bool = True  # the device kit runs it (check, bench, serve); its table must list it (tests/test_layers.py)
    fixed_threads: int | None = None  # the one CPU thread count it runs with; None: any
    converts_via: str = ""  # the runtime whose converter writes its file ("": its own, from the module)
    not_timed: str = ""  # why a latency measured here is not its target's ("": it is): budgets, latency
    # tables and `bench --runtime all` leave such a runtime out

    @property
    def timed(self) -> bool:
        return not self.not_timed


RUNTIMES = {
    r.name: r
    for r in (
        Runtime("onnxruntime-cpu", "onnxruntime", ".onnx", False, "pip install onnxruntime"),
        # ONNX Runtime's CPU provider on an INT8 (QDQ) file: model.int8.onnx; a budget times each candidate quantised
        Runtime("onnxruntime-cpu-int8", "onnxruntime", ".onnx", False, "pip install onnxruntime", "int8"),
        Runtime("onnxruntime-cuda", "onnxruntime", ".onnx", True, "pip install onnxruntime-gpu"),
        Runtime("tensorrt-fp16", "tensorrt", ".engine", True, "pip install tensorrt", "fp16"),
        Runtime("tensorrt-int8", "tensorrt", ".engine", True, "pip install tensorrt", "int8"),
        Runtime("torch-cpu", "torch", ".pt2", False, "pip install torch", in_kit=False),
        Runtime("torch-cuda", "torch", ".pt2", True, "pip install torch (a CUDA build)", in_kit=False),
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
        # TensorFlow Lite Micro's interpreter (its reference kernels, one thread) on litert-int8's full-integer file;
        # on a microcontroller it runs from the firmware bundle (RUN_DIR/export/tflm/), not from the kit
        Runtime(
            "tflm-int8",
            "tflm",
            ".tflite",
            False,
            "pip install 'edgenas[tflm]'",
            "int8",
            in_kit=False,
            fixed_threads=1,
            converts_via="litert-int8",
            not_timed="TFLM's reference kernels on this machine compute what a microcontroller computes, not as fast: "
            "bound a microcontroller by memory (budget.max_peak_memory_kb, max_flash_kb)",
        ),
    )
}
CPU_RUNTIMES = tuple(name for name, r in RUNTIMES.items() if not r.needs_gpu)
TIMED_RUNTIMES = tuple(name for name, r in RUNTIMES.items() if r.timed)  # a budget, a latency table can time these
KIT_RUNTIMES = tuple(name for name, r in RUNTIMES.items() if r.in_kit)  # the kit, and so a device server, runs these
