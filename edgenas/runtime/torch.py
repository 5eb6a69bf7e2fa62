"""PyTorch as a runtime plug-in (torch-cpu, torch-cuda): the module runs eagerly.

The artifact is a ``torch.export`` program (loaded without unpickling code); a network being timed
needs none: ``TorchBackend.wrap`` runs the module as it is.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from torch import nn

from edgenas.config.runtimes import RUNTIMES, Runtime
from edgenas.device_kit import edgenas_kit as kit
from edgenas.errors import MissingDependency, UserInputError
from edgenas.runtime.runners import TorchRunner


@dataclasses.dataclass(frozen=True)
class TorchBackend(Runtime):
    def available(self) -> None:
        import torch

        if self.needs_gpu and not torch.cuda.is_available():
            raise MissingDependency(
                f"runtime {self.name} needs a CUDA GPU and a CUDA build of torch; torch sees no GPU ({self.install})"
            )

    def version(self) -> str:
        import torch

        return str(torch.__version__)

    def convert(
        self, model, *, out: Path, input_chw: tuple[int, int, int], calibration: np.ndarray | None = None
    ) -> Path:
        import torch

        model = model.cpu().eval()
        batch = torch.export.Dim("batch", min=1)
        program = torch.export.export(model, (torch.zeros(2, *input_chw),), dynamic_shapes=({0: batch},))
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.export.save(program, str(out))
        return out

    def open(self, path: Path, *, threads: int | None = None) -> kit.Runner:
        import torch

        path = Path(path)
        try:
            program = torch.export.load(str(path))
        except Exception as e:  # noqa: BLE001 -- torch raises many kinds for a file it cannot read
            raise UserInputError(f"{path}: not a torch.export program ({' '.join(str(e).split())[:160]})") from None
        chw = _input_shape(program)[1:]
        return self.wrap(_Program(program.module()), input_chw=chw, model_path=path, threads=threads)

    def wrap(
        self, model, *, input_chw: tuple[int, int, int], model_path: Path, threads: int | None = None
    ) -> kit.Runner:
        """A runner for an ``nn.Module`` as it is (restores torch's threads on close)."""
        self.available()
        return TorchRunner(model, runtime=self.name, input_chw=input_chw, model_path=Path(model_path), threads=threads)


class _Program(nn.Module):
    """An exported program's module, which refuses ``eval()``/``train()`` (it has no training mode)."""

    def __init__(self, graph):
        super().__init__()
        self.graph = graph

    def train(self, mode: bool = True):
        return self

    def forward(self, x):
        return self.graph(x)


def _input_shape(program) -> tuple:
    spec = next(s for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT")
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == spec.arg.name)
    return tuple(int(d) if isinstance(d, int) else 0 for d in node.meta["val"].shape)


BACKENDS = [TorchBackend(**dataclasses.asdict(r)) for r in RUNTIMES.values() if r.engine == "torch"]
