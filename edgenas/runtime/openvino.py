"""OpenVINO as a runtime plug-in: openvino-cpu and openvino-int8 (NNCF post-training quantisation).

``ov.convert_model`` takes the module; the IR (``.xml`` + ``.bin``) is saved uncompressed
(``compress_to_fp16=False``: the default FP16 weights cost parity, 3.5e-5 against 3e-8) with a
dynamic batch axis. OpenVINO's converter and NNCF send usage telemetry and write under ``~/intel``
unless told they run in CI; ``edgenas_engines.openvino_telemetry_off`` tells them so while they load and convert.
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
from edgenas.runtime.runners import kit_errors


@dataclasses.dataclass(frozen=True)
class OpenVINOBackend(Runtime):
    def available(self) -> None:
        require(self.name, self.install, "openvino", *(("nncf",) if self.precision == "int8" else ()))

    def version(self) -> str:
        with kit_errors():
            return engines.package_version("openvino")

    def convert(
        self, model, *, out: Path, input_chw: tuple[int, int, int], calibration: np.ndarray | None = None
    ) -> Path:
        """``model`` as an IR at ``out`` (``.xml``, its ``.bin`` beside it; INT8: quantised by NNCF on
        ``calibration``, NCHW float32 images; None: random ones, for timing) and its metadata file."""
        import torch

        self.available()
        out = Path(out)
        with staging(out) as tmp, quiet(), engines.openvino_telemetry_off():
            import openvino as ov

            ir = ov.convert_model(eval_copy(model), example_input=torch.zeros(1, *input_chw), input=[(-1, *input_chw)])
            if self.precision == "int8":
                import nncf

                images = calibration_or_random(calibration, input_chw)
                # fast_bias_correction=False: NNCF's full bias correction; the fast one cost a briefly trained
                # digits network 3.3 pp of top-1 (agreement with PyTorch 90.5 % against 95.5 %)
                ir = nncf.quantize(
                    ir,
                    nncf.Dataset([images[i : i + 1] for i in range(len(images))]),
                    subset_size=len(images),
                    fast_bias_correction=False,
                )
            staged = tmp / out.name
            ov.save_model(ir, str(staged), compress_to_fp16=False)
            meta = write_artifact_metadata(staged, runtime=self.name, input_chw=input_chw)
            publish(
                [
                    (staged.with_suffix(".bin"), out.with_suffix(".bin")),
                    (meta, engines.metadata_path(out)),
                    (staged, out),
                ]
            )
        return out

    def open(self, path: Path, *, threads: int | None = None) -> kit.Runner:
        with kit_errors():
            return kit.open_runner(path, self.name, threads)


BACKENDS = [OpenVINOBackend(**dataclasses.asdict(r)) for r in RUNTIMES.values() if r.engine == "openvino"]
