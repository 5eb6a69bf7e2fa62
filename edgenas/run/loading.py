"""A finished run's network with its trained weights, and its dataset loaded as the search loaded it."""

from __future__ import annotations

import torch

from edgenas.errors import RunDirError
from edgenas.run.meta import data_fingerprint
from edgenas.run.rundir import RunDir
from edgenas.training.data import ImageData
from edgenas.training.network import build_network
from edgenas.training.tasks import task_for


def load_run_model(run: RunDir, device: str = "cpu") -> torch.nn.Module:
    """The final network of ``run`` with its trained weights, in eval mode on ``device``."""
    weights = run.path / RunDir.WEIGHTS
    if not weights.is_file():
        raise RunDirError(f"{weights} is missing; the search in {run.path} has not finished")
    meta = run.meta
    model = build_network(run.arch(), task=meta.task, in_channels=meta.data.in_channels, outputs=meta.outputs)
    try:
        state = torch.load(weights, map_location=device, weights_only=True)
        model.load_state_dict(state)
    except Exception as e:  # noqa: BLE001 -- unpickling refused, not a state dict, wrong keys or shapes
        raise RunDirError(
            f"{weights} does not hold this run's weights ({' '.join(str(e).split())[:160]}); "
            "train the run again (edgenas train)"
        ) from None
    return model.to(device).eval()


def load_run_data(run: RunDir) -> ImageData:
    """The run's dataset, loaded as the search loaded it (same task, split and seed), and checked
    against the fingerprint run.json recorded: figures on other images would be reported as the run's."""
    meta = run.meta
    ds = meta.dataset
    data = task_for(meta.task).load_data(
        ds.name, data_dir=ds.data_dir, profile=meta.profile, seed=ds.split_seed, download=False
    )
    if ds.fingerprint is not None and all(hasattr(data, s) for s in ("train", "val", "test")):
        now = data_fingerprint(data)
        if now != ds.fingerprint:
            where = f"the images in {ds.data_dir}" if ds.data_dir else f"the {ds.name} dataset"
            raise RunDirError(
                f"{where} are not the ones {run.path} was made on (fingerprint {ds.fingerprint[:19]}… "
                f"in {RunDir.META}, now {now[:19]}…): figures on them would not be the run's; "
                "restore the run's images, or search this data in a new run"
            )
    return data
