"""Runners behind the device kit's interface: the kit's (ONNX Runtime, TensorRT) and PyTorch's own.

The kit's exceptions become edgenas errors here (``kit_errors``), so the layers above see one
error hierarchy.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np

from edgenas.config.runtimes import RUNTIMES
from edgenas.device_kit import edgenas_engines as engines
from edgenas.device_kit import edgenas_kit as kit
from edgenas.errors import MissingDependency, ParamError, UserInputError


@contextmanager
def kit_errors():
    """The device kit's exceptions (and its engine runners') as edgenas errors (exit code 2, one line)."""
    try:
        yield
    except (kit.KitMissingDependency, engines.EngineMissing) as e:
        raise MissingDependency(str(e)) from None
    except (kit.KitError, engines.EngineError) as e:
        raise UserInputError(str(e)) from None


class TorchRunner(kit.Runner):
    """A PyTorch network behind the kit's runner interface (runtimes ``torch-cpu`` and ``torch-cuda``)."""

    @staticmethod
    def check_cuda(runtime: str) -> None:
        import torch

        if not torch.cuda.is_available():
            raise ParamError("runtime", runtime, "needs a CUDA GPU and torch sees none; use torch-cpu")

    def __init__(
        self, model, *, runtime: str, input_chw: tuple[int, int, int], model_path: Path, threads: int | None = None
    ):
        import torch

        self.torch, self.runtime, self.runtime_version = torch, runtime, torch.__version__
        self._old_threads = None
        if runtime == "torch-cuda":
            self.check_cuda(runtime)
            self.dev, self.threads, self.device = "cuda", None, torch.cuda.get_device_name()
        elif runtime == "torch-cpu":
            if threads is not None and threads < 1:
                raise ParamError("threads", threads, "give an integer >= 1")
            self.dev, self.threads, self.device = "cpu", threads or kit.available_cpus(), kit.cpu_name()
        else:
            raise ParamError(
                "runtime", runtime, f"not a PyTorch runtime ({', '.join(n for n in RUNTIMES if n.startswith('torch'))})"
            )
        self.model = model.to(self.dev).eval()
        self.input_chw, self.model_path = tuple(input_chw), model_path
        if self.threads:  # restored by close(); nested runners close in reverse order
            self._old_threads = torch.get_num_threads()
            torch.set_num_threads(self.threads)

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            x = self.torch.from_numpy(np.ascontiguousarray(inputs, np.float32)).to(self.dev)
            return self.model(x).cpu().numpy()  # .cpu() waits for the GPU: the call is synchronised

    def close(self) -> None:
        if self._old_threads:
            self.torch.set_num_threads(self._old_threads)
            self._old_threads = None
