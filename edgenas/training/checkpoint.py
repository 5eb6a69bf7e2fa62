"""A training's checkpoint: everything a stopped ``fit`` needs to go on as if it had never stopped.

``fit`` builds and restores the states (``training_state``, ``restore``); a ``Checkpointing`` says
when to take one and where it goes. States hold tensors and plain data only (``weights_only`` loads).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass
class Checkpointing:
    """Checkpoints of one ``fit``: ``save(state)`` after every ``every``-th epoch (0: never on a
    schedule) and after the epoch in which ``stop()`` became true (``fit`` then returns, status
    ``stopped``); ``state``: a state ``save`` was given, to continue from (bit-identical on the CPU
    at the same thread count). ``fit`` builds the states; the caller decides where they go."""

    save: Callable[[dict], None]
    every: int = 0
    stop: Callable[[], bool] = lambda: False
    state: dict | None = None


def _rng_states(device: torch.device) -> dict:
    """Every random state a training could touch: torch's (and CUDA's), numpy's, Python's."""
    state = np.random.get_state()  # legacy=True (the default): the tuple, never the dict
    if isinstance(state, dict):
        raise TypeError("numpy.random.get_state() returned a dict; edgenas saves the legacy tuple")
    kind, keys, pos, has_gauss, gauss = state
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
    }


def _set_rng_states(states: dict, device: torch.device) -> None:
    torch.set_rng_state(states["torch"])
    if device.type == "cuda" and states["cuda"] is not None:
        torch.cuda.set_rng_state(states["cuda"], device)
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(states["python"])


def training_state(epoch: int, *, epochs: int, modules: list[nn.Module], loop, step) -> dict:
    """What a resumed ``fit`` needs to go on as if it had never stopped, after ``epoch`` of ``epochs``: a copy,
    which the training that goes on does not change. ``loop``: the trainer's ``_EagerLoop`` or a
    ``GraphedTrainer`` (``state_dict``/``load_state_dict``); ``step``: its ``_Step`` (generator, device)."""
    return copy.deepcopy(
        {
            "epoch": epoch,
            "epochs": epochs,
            "modules": [m.state_dict() for m in modules],
            "loop": loop.state_dict(),
            "generator": step.gen.get_state(),
            "rng": _rng_states(step.device),
        }
    )


def restore(state: dict, *, epochs: int, modules: list[nn.Module], loop, step) -> int:
    """Load a ``training_state`` into the training; the epoch it was taken after."""
    if state["epochs"] != epochs or len(state["modules"]) != len(modules):
        raise ValueError(f"the checkpoint is of a {state['epochs']}-epoch training, not of this {epochs}-epoch one")
    for m, sd in zip(modules, state["modules"]):
        m.load_state_dict(sd)
    loop.load_state_dict(state["loop"])
    step.gen.set_state(state["generator"])
    _set_rng_states(state["rng"], step.device)
    return int(state["epoch"])
