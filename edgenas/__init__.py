"""edgenas: discover small, accurate networks for edge devices, export them and guard their latency.

    import edgenas
    summary = edgenas.discover("demo")                  # search + train; returns summary.json
    arch = edgenas.Arch.from_dict(summary["arch"])
    model = edgenas.build_model(arch, in_channels=1, num_classes=10)
"""

__version__ = "0.1.0"

__all__ = ["Arch", "build_model", "count_params", "count_macs", "discover", "load_profile", "train_final", "__version__"]


def __getattr__(name):  # heavy modules (torch) load on first use
    if name in ("Arch", "build_model", "count_params", "count_macs"):
        from edgenas import space

        return getattr(space, name)
    if name == "discover":
        from edgenas.pipeline import discover

        return discover
    if name == "load_profile":
        from edgenas.profiles import load_profile

        return load_profile
    if name == "train_final":
        from edgenas.final import train_final

        return train_final
    raise AttributeError(f"module 'edgenas' has no attribute {name!r}")
