"""What differs between tasks: how data loads, how a candidate trains, what ranks and what is reported.

``classify`` ranks candidates by validation accuracy and reports test accuracy; ``face`` (see
``face.py``) ranks by verification accuracy on held-out identities.
"""

from __future__ import annotations

from edgenas.errors import UserInputError


class ClassifyTask:
    name = "classify"
    metric = "val acc"

    def load_data(self, name, data_dir, profile, seed, download):
        from edgenas.data import load_dataset

        d = profile.data
        return load_dataset(name, data_dir, download=download, val_fraction=d.val_fraction, seed=seed,
                            input_size=d.input_size, channels=d.channels)

    def extra_meta(self, data) -> dict:
        return {}

    def outputs(self, data, profile) -> int:
        """Outputs of the network the run deploys (what the strategy's parameter matching counts)."""
        return data.num_classes

    def model_size(self, arch, shape, profile) -> tuple[int, int]:
        """(params, MACs per image) of the network the run deploys: what budgets and summary.json count."""
        from edgenas.space import count_macs, count_params

        c, k = shape["in_channels"], shape["num_classes"]
        return count_params(arch, c, k), count_macs(arch, c, k, tuple(shape["input_size"]))

    def train(self, arch, data, epochs, profile, device, seed, on_epoch=None):
        from edgenas.train import train_candidate

        return train_candidate(arch, data, epochs, profile.train, device, seed, on_epoch=on_epoch)

    def test_metrics(self, model, data, device) -> dict:
        from edgenas.train import evaluate

        return {"test_acc": evaluate(model, data.test, data, device)}


def task_for(name: str):
    if name == "classify":
        return ClassifyTask()
    if name == "face":
        from edgenas.face import FaceTask

        return FaceTask()
    raise UserInputError(f"unknown task {name!r}; choose classify or face")
