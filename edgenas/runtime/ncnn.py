"""ncnn as a runtime plug-in: ncnn-cpu (fp32; the pip wheels have no INT8 path).

pnnx converts a TorchScript trace of the module to ``.ncnn.param`` + ``.ncnn.bin`` with fp16
weights off (``fp16=0``); pnnx is a program, run here with its output captured. An ncnn file
does not record its input shape: the metadata file beside it does.
"""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import numpy as np

from edgenas.config.runtimes import RUNTIMES, Runtime
from edgenas.device_kit import edgenas_engines as engines
from edgenas.device_kit import edgenas_kit as kit
from edgenas.errors import EdgenasError
from edgenas.runtime.conversion import (
    eval_copy,
    publish,
    quiet,
    require,
    staging,
    write_artifact_metadata,
)
from edgenas.runtime.runners import kit_errors

PNNX_TIMEOUT_S = 600  # a network of the search space converts in seconds


def weights_path(param: Path) -> Path:
    """``model.ncnn.param`` -> ``model.ncnn.bin``."""
    return engines.companion_files(param)[0]


@dataclasses.dataclass(frozen=True)
class NcnnBackend(Runtime):
    def available(self) -> None:
        require(self.name, self.install, "ncnn", "pnnx")

    def version(self) -> str:
        with kit_errors():
            return engines.package_version("ncnn")

    def convert(
        self, model, *, out: Path, input_chw: tuple[int, int, int], calibration: np.ndarray | None = None
    ) -> Path:
        """``model`` as ``out`` (``.ncnn.param``) and its ``.ncnn.bin``, and the metadata file.
        ``calibration`` is not used (fp32)."""
        self.available()
        import pnnx
        import torch

        out = Path(out)
        if not out.name.endswith(self.suffix):
            raise ValueError(f"an ncnn model's file name ends with {self.suffix}, got {out.name}")
        with staging(out) as tmp:
            tmp = tmp.resolve()  # pnnx runs in tmp: paths relative to the caller's folder would not be found there
            with quiet(), torch.no_grad():
                torch.jit.trace(eval_copy(model), torch.zeros(1, *input_chw)).save(str(tmp / "model.pt"))
            staged = tmp / out.name
            shape = ",".join(str(d) for d in (1, *input_chw))
            r = subprocess.run(
                [
                    pnnx.EXEC_PATH,
                    str(tmp / "model.pt"),
                    f"inputshape=[{shape}]f32",
                    "device=cpu",
                    "optlevel=2",
                    "fp16=0",
                    f"ncnnparam={staged}",
                    f"ncnnbin={weights_path(staged)}",
                ],
                cwd=tmp,
                capture_output=True,
                text=True,
                timeout=PNNX_TIMEOUT_S,
            )
            if r.returncode != 0 or not staged.is_file() or not weights_path(staged).is_file():
                last = (r.stderr.strip() or r.stdout.strip() or "no output").splitlines()[-1]
                raise EdgenasError(f"pnnx could not convert the network to ncnn (exit {r.returncode}): {last}")
            meta = write_artifact_metadata(staged, runtime=self.name, input_chw=input_chw)
            publish([(weights_path(staged), weights_path(out)), (meta, engines.metadata_path(out)), (staged, out)])
        return out

    def open(self, path: Path, *, threads: int | None = None) -> kit.Runner:
        with kit_errors():
            return kit.open_runner(path, self.name, threads)


BACKENDS = [NcnnBackend(**dataclasses.asdict(r)) for r in RUNTIMES.values() if r.engine == "ncnn"]
