"""edgenas: discover small, accurate networks for edge devices, export them and guard their latency.

import edgenas
summary = edgenas.discover("demo", dataset="digits")    # search + train; returns summary.json
arch = edgenas.Arch.from_dict(summary["arch"])
model = edgenas.build_model(arch, in_channels=1, num_classes=10)
"""

from edgenas.version import __version__

__all__ = [
    "Arch",
    "build_model",
    "count_params",
    "count_macs",
    "discover",
    "load_profile",
    "train_final",
    "__version__",
]

# Public name -> the module that defines it; loaded on first use, so `import edgenas` stays light.
_API = {
    "Arch": "edgenas.search.space",
    "count_params": "edgenas.search.space",
    "count_macs": "edgenas.search.space",
    "build_model": "edgenas.training.network",
    "discover": "edgenas.run.discover",
    "load_profile": "edgenas.config.profile",
    "train_final": "edgenas.run.final",
}


def __getattr__(name):
    if name not in _API:
        raise AttributeError(f"module 'edgenas' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_API[name]), name)
