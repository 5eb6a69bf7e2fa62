"""``edgenas verify``: the face verification protocol on a face run's network, as figures and text."""

from __future__ import annotations

from pathlib import Path

from edgenas.errors import ParamError, UserInputError
from edgenas.run.loading import load_run_model
from edgenas.run.rundir import RunDir
from edgenas.training.data import read_images
from edgenas.training.embeddings import pair_scores
from edgenas.training.faces import image_root
from edgenas.training.tasks import FaceTask
from edgenas.training.trainer import select_device
from edgenas.training.verification import (
    read_pairs_file,
    resolve_pairs,
    roc_points,
    verify,
)
from edgenas.version import __version__


def _pairs_from_file(run: RunDir, data_dir, pairs_file):
    """(images, pairs, image root, training identities among the pairs) of an LFW-format pairs file."""
    meta = run.meta
    if not Path(data_dir).expanduser().is_dir():
        raise ParamError("data_dir", str(data_dir), "not a directory")
    root = image_root(meta.dataset.name, data_dir)
    lines = read_pairs_file(pairs_file)
    paths, pairs = resolve_pairs(lines, root, pairs_file)
    x = read_images(paths, meta.data.input_size, meta.data.in_channels)
    seen = {p.name_a for p in lines} | {p.name_b for p in lines}
    return x, pairs, root, len(seen & set(meta.data.class_names))


def verify_run(run_dir, *, data_dir=None, pairs_file=None, device=None, flip: bool = False) -> dict:
    """Verification figures of a face run's network: on a pairs file (LFW format) of images under
    ``data_dir``, or on the run's held-out test identities. ``flip``: each embedding is that of the
    image plus its horizontal mirror (insightface's Accuracy-Flip). Returns what ``verify.json`` holds."""
    run = RunDir.open(run_dir)
    meta = run.meta
    if meta.task != "face":
        raise UserInputError(
            f"{run.path} is a {meta.task} run; edgenas verify needs a face run (edgenas discover --task face)"
        )
    dev = select_device(device)
    data_dir = data_dir or meta.dataset.data_dir
    if not data_dir:
        raise ParamError(
            "data_dir", None, f"{run.path} has no data directory on record; give the folder of identity images"
        )
    if pairs_file:
        x, pairs, root, overlap = _pairs_from_file(run, data_dir, pairs_file)
        source = str(pairs_file)
    else:
        ds = meta.dataset
        data = FaceTask().load_data(
            ds.name, data_dir=data_dir, profile=meta.profile, seed=ds.split_seed, download=False
        )
        x, pairs, root = data.test.x, data.test_pairs, Path(data.image_root)
        source, overlap = "held-out test identities", 0
    scores = pair_scores(
        load_run_model(run, str(dev)), x=x, pairs=pairs, mean=meta.data.mean, std=meta.data.std, device=dev, flip=flip
    )
    try:
        v = verify(scores, same=pairs.same, folds=pairs.folds)
    except ValueError as e:  # one kind of pair, or NaN/infinite scores: no figure would mean anything
        raise UserInputError(
            f"cannot verify {run.path} on {'the pairs file ' if pairs_file else ''}{source}: {e}"
        ) from None
    return {
        "run_dir": str(run.path),
        "arch": str(run.arch()),
        "pairs_source": source,
        "flip": flip,
        "data_dir": str(Path(data_dir).expanduser().resolve()),
        "image_root": str(root),
        "training_identities_in_pairs": overlap,
        **v.to_dict(),
        "roc": roc_points(scores, pairs.same),
        "edgenas_version": __version__,
    }


def format_verification(r: dict) -> str:
    flip = ", embeddings of image + mirror (flip)" if r.get("flip") else ""
    lines = [
        f"{r['arch']}: {r['pairs']} pairs ({r['same']} same, {r['different']} different) from {r['pairs_source']}{flip}",
        f"  accuracy      {r['accuracy']:.2f}% ± {r['accuracy_std']:.2f} ({r['folds']}-fold: threshold chosen on the other folds)",
        f"  threshold     {r['threshold']:.4f} cosine (best on all pairs: {r['best_accuracy']:.2f}%)",
    ]
    if r["roc_auc"] is not None:
        lines.append(f"  ROC AUC       {r['roc_auc']:.2f}%")
    if r["tar_at_far"] is not None:
        note = (
            f" (only {r['different']} different pairs: this is TAR at 0 false accepts)"
            if r["far_floor"] > r["far"]
            else ""
        )
        lines.append(f"  TAR@FAR={r['far']:.0e} {r['tar_at_far']:.2f}%{note}")
    if r["training_identities_in_pairs"]:
        lines.append(f"  warning: {r['training_identities_in_pairs']} identities of the pairs were used in training")
    return "\n".join(lines)
