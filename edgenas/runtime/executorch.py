"""ExecuTorch as a runtime plug-in: executorch-cpu and executorch-int8, both lowered to XNNPACK.

``torch.export`` -> ``to_edge_transform_and_lower`` with the XNNPACK partitioner -> a ``.pte``
program; INT8 is PT2E with the XNNPACK quantiser (symmetric, weights per channel). The program
takes NCHW float32 images, batch 1.
"""

from __future__ import annotations

import dataclasses
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


@dataclasses.dataclass(frozen=True)
class ExecuTorchBackend(Runtime):
    def available(self) -> None:
        require(self.name, self.install, "executorch", "torchao")

    def version(self) -> str:
        with kit_errors():
            return engines.package_version("executorch")

    def convert(
        self, model, *, out: Path, input_chw: tuple[int, int, int], calibration: np.ndarray | None = None
    ) -> Path:
        """``model`` as a ``.pte`` program at ``out`` (INT8: quantised with ``calibration``, NCHW float32
        images; None: random ones, for timing) and its metadata file."""
        import torch

        self.available()
        sample = torch.zeros(1, *input_chw)
        out = Path(out)
        with staging(out) as tmp, quiet():
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import (
                XnnpackPartitioner,
            )
            from executorch.exir import to_edge_transform_and_lower

            module = eval_copy(model)
            if self.precision == "int8":
                from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
                    XNNPACKQuantizer,
                    get_symmetric_quantization_config,
                )

                quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
                module = quantize_pt2e(
                    module,
                    quantizer=quantizer,
                    sample=sample,
                    calibration=calibration_or_random(calibration, input_chw),
                )
            program = to_edge_transform_and_lower(
                torch.export.export(module, (sample,)), partitioner=[XnnpackPartitioner()]
            ).to_executorch()
            staged = tmp / out.name
            staged.write_bytes(program.buffer)
            meta = write_artifact_metadata(staged, runtime=self.name, input_chw=input_chw)
            publish([(meta, engines.metadata_path(out)), (staged, out)])
        return out

    def open(self, path: Path, *, threads: int | None = None) -> kit.Runner:
        with kit_errors():
            return kit.open_runner(path, self.name, threads)


BACKENDS = [ExecuTorchBackend(**dataclasses.asdict(r)) for r in RUNTIMES.values() if r.engine == "executorch"]
