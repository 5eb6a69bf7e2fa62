"""LiteRT (the former TensorFlow Lite) as a runtime plug-in: litert-cpu and litert-int8.

litert-torch converts the module (no TensorFlow, no ONNX in between) with NHWC input, the layout
LiteRT's kernels compute in, recorded in the metadata file beside the ``.tflite`` so the kit feeds
it right; INT8 is PT2E with litert-torch's quantiser (symmetric, weights per channel), int8 input
and output. The device needs only ``ai-edge-litert`` and numpy.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from edgenas.config.runtimes import RUNTIMES, Runtime
from edgenas.device_kit import edgenas_engines as engines
from edgenas.device_kit import edgenas_kit as kit
from edgenas.runtime.conversion import (
    calibration_or_random,
    eval_copy,
    publish,
    quiet,
    require,
    staging,
    write_artifact_metadata,
)
from edgenas.runtime.pt2e import quantize_pt2e
from edgenas.runtime.runners import kit_errors

LAYOUT = "NHWC"  # the .tflite's input layout


@dataclasses.dataclass(frozen=True)
class LiteRTBackend(Runtime):
    def available(self) -> None:
        require(self.name, self.install, "ai_edge_litert", "litert_torch", "torchao")

    def version(self) -> str:
        with kit_errors():
            return engines.package_version("litert")

    def convert(
        self, model, *, out: Path, input_chw: tuple[int, int, int], calibration: np.ndarray | None = None
    ) -> Path:
        """``model`` as a ``.tflite`` at ``out`` taking NHWC images (int8 for litert-int8, quantised with
        ``calibration``: NCHW float32 images; None: random ones, for timing) and its metadata file."""
        import torch

        self.available()
        c, h, w = input_chw
        sample = torch.zeros(1, h, w, c)
        out = Path(out)
        with staging(out) as tmp, quiet(), _no_progress():
            import litert_torch

            nhwc = litert_torch.to_channel_last_io(eval_copy(model), args=[0])
            options = {}
            if self.precision == "int8":
                from litert_torch.quantize.pt2e_quantizer import (
                    PT2EQuantizer,
                    get_symmetric_quantization_config,
                )
                from litert_torch.quantize.quant_config import QuantConfig

                quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
                nhwc = quantize_pt2e(
                    nhwc,
                    quantizer=quantizer,
                    sample=sample,
                    to_input=lambda x: x.permute(0, 2, 3, 1),
                    calibration=calibration_or_random(calibration, input_chw),
                    fold_quantize=False,
                )
                options["quant_config"] = QuantConfig(pt2e_quantizer=quantizer)
            staged = tmp / out.name
            litert_torch.convert(nhwc, (sample,), **options).export(str(staged))
            meta = write_artifact_metadata(staged, runtime=self.name, input_chw=input_chw, layout=LAYOUT)
            publish([(meta, engines.metadata_path(out)), (staged, out)])
        return out

    def open(self, path: Path, *, threads: int | None = None) -> kit.Runner:
        with kit_errors():
            return kit.open_runner(path, self.name, threads)


class _no_progress:
    """litert-torch prints its progress unless LITERT_TORCH_SHOW_PROGRESS=n (read on each call)."""

    KEY = "LITERT_TORCH_SHOW_PROGRESS"

    def __enter__(self):
        self.before = os.environ.get(self.KEY)
        os.environ[self.KEY] = "n"

    def __exit__(self, *exc):
        if self.before is None:
            os.environ.pop(self.KEY, None)
        else:
            os.environ[self.KEY] = self.before


BACKENDS = [LiteRTBackend(**dataclasses.asdict(r)) for r in RUNTIMES.values() if r.engine == "litert"]
