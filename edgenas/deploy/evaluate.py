"""``edgenas evaluate``: the whole test split through an exported file on its runtime, beside PyTorch.

Classification: top-1/top-5, per-class accuracy and the confusion matrix. Faces: the verification
protocol on the test pairs, from the runtime's embeddings. ``--max-drop`` turns the difference
into a gate (``AccuracyDropError``, exit 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgenas.deploy.bench import stale_export
from edgenas.deploy.export import layout
from edgenas.deploy.export.formats import runtime_for_file
from edgenas.device_kit import edgenas_kit as kit
from edgenas.errors import AccuracyDropError, ParamError, UserInputError
from edgenas.run.loading import load_run_data, load_run_model
from edgenas.run.rundir import RunDir
from edgenas.runtime.backend import backend_of
from edgenas.runtime.runners import TorchRunner, kit_errors
from edgenas.training.augment import normalize
from edgenas.training.embeddings import embed, scores_of
from edgenas.training.verification import verify
from edgenas.version import __version__

CHUNK = 256  # images per runtime call: bounds the activations' memory on large test splits
TOP_K = 5


def default_model(run: RunDir) -> Path:
    return layout.export_dir(run.path) / layout.ONNX


def result_path(run: RunDir, model: Path) -> Path:
    """Where the figures go by default: ``RUN_DIR/export/<model name>.evaluate.json`` (beside the model for
    a model in a folder of the export, as the firmware bundle's ``tflm/model.tflite``)."""
    export = layout.export_dir(run.path)
    inside = model.parent.parent.resolve() == export.resolve()
    return layout.evaluate_json(model if inside else export / model.name)


def _outputs(runner, x: np.ndarray, *, flip: bool) -> np.ndarray:
    """``runner``'s outputs on normalised images ``x``; ``flip``: embedding of x plus its mirror, L2-normalised."""
    out = np.concatenate([runner(x[i : i + CHUNK]) for i in range(0, len(x), CHUNK)]).astype(np.float64)
    if flip:
        mirrored = np.ascontiguousarray(x[..., ::-1])
        out = out + np.concatenate([runner(mirrored[i : i + CHUNK]) for i in range(0, len(x), CHUNK)])
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out


def classify_figures(logits: np.ndarray, labels: np.ndarray, classes: int) -> dict:
    """Top-1/top-k accuracy (percent), per-class accuracy and the confusion matrix (rows: true class)."""
    labels = np.asarray(labels, np.int64)
    pred = logits.argmax(1)
    k = min(TOP_K, logits.shape[1])
    topk = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    confusion = np.zeros((classes, classes), np.int64)
    np.add.at(confusion, (labels, pred), 1)
    per_class = [100.0 * confusion[c, c] / confusion[c].sum() if confusion[c].sum() else None for c in range(classes)]
    return {
        "top1": 100.0 * float(np.mean(pred == labels)),
        "top5": 100.0 * float(np.mean((topk == labels[:, None]).any(1))),
        "top5_k": k,
        "per_class": [None if a is None else float(a) for a in per_class],
        "confusion": confusion.tolist(),
    }


def face_figures(embeddings: np.ndarray, pairs) -> dict:
    return verify(scores_of(embeddings, pairs), same=pairs.same, folds=pairs.folds).to_dict()


HEADLINE = {"classify": ("top1", "top-1 accuracy"), "face": ("accuracy", "verification accuracy")}
COMPARED = {"classify": ("top1", "top5"), "face": ("accuracy", "best_accuracy", "roc_auc", "tar_at_far")}


def _compare(task: str, artifact: dict, reference: dict) -> dict:
    diff = {
        k: (artifact[k] - reference[k] if artifact[k] is not None and reference[k] is not None else None)
        for k in COMPARED[task]
    }
    key, _ = HEADLINE[task]
    return {"difference": diff, "drop_pp": reference[key] - artifact[key]}


def _check_args(run: RunDir, *, model: Path, runtime: str | None, flip: bool) -> str:
    if not model.is_file():
        hint = (
            f"run `edgenas export {run.path}` first"
            if model.parent == layout.export_dir(run.path)
            else "give an exported file"
        )
        raise ParamError("model", str(model), f"no such file; {hint}")
    if runtime is not None:
        backend_of(runtime)  # an unknown runtime: a ParamError naming the known ones
    if flip and run.meta.task != "face":
        raise ParamError(
            "flip",
            True,
            f"applies to face runs (embedding of the image plus its mirror); {run.path} is a {run.meta.task} run",
        )
    bundled = runtime_for_file(f"{model.parent.name}/{model.name}")  # tflm/model.tflite: tflm-int8
    return (
        runtime or bundled or runtime_for_file(model.name) or kit.default_runtime(model)
    )  # model.int8.onnx: onnxruntime-cpu-int8


def _test_inputs(run: RunDir, data) -> tuple[np.ndarray, Any]:
    """The normalised test images and what they are scored against: labels (an array) for classify, the test
    ``Pairs`` for face."""
    test = data.test
    if len(test) == 0:
        raise UserInputError(f"the dataset of {run.path} has no test images to evaluate on")
    x = normalize(test.x.cpu(), data.mean, data.std).numpy()
    return x, (data.test_pairs if run.meta.task == "face" else test.y.cpu().numpy())


def _reference(run: RunDir, *, model, data, x: np.ndarray, threads: int | None, flip: bool) -> np.ndarray:
    """PyTorch's outputs on the same images: logits, or embeddings as ``edgenas verify`` computes them
    (the runner holds the model on the CPU with ``threads`` threads while ``embed`` runs it)."""
    with TorchRunner(
        model,
        runtime="torch-cpu",
        input_chw=run.meta.data.input_chw,
        model_path=run.path / RunDir.WEIGHTS,
        threads=threads,
    ) as reference:
        if run.meta.task == "face":
            return embed(model, x=data.test.x.cpu(), mean=data.mean, std=data.std, device="cpu", flip=flip).astype(
                np.float64
            )
        return _outputs(reference, x, flip=False)


def evaluate_run(
    run_dir: str | Path,
    *,
    model: str | Path | None = None,
    runtime: str | None = None,
    threads: int | None = None,
    flip: bool = False,
    torch_model=None,
    data=None,
    max_images: int | None = None,
) -> dict:
    """The test split through ``model`` (default RUN_DIR/export/model.onnx) on ``runtime`` and through
    the run's PyTorch network; figures of both and their difference. ``torch_model``/``data``: already
    loaded (export passes them). ``max_images``: only the test split's first N images (classify; slow
    runtimes such as TFLM's interpreter); the result says how many of how many it evaluated."""
    run = RunDir.open(run_dir)
    path = Path(model) if model is not None else default_model(run)
    runtime = _check_args(run, model=path, runtime=runtime, flip=flip)
    stale = stale_export(path, runtime)  # made from other weights than model.pt now: said in the figures
    task, shape = run.meta.task, run.meta.data
    if max_images is not None and (task != "classify" or isinstance(max_images, bool) or max_images < 1):
        raise ParamError(
            "max_images",
            max_images,
            "give an integer >= 1, for a classify run (faces are scored on their whole protocol of pairs)",
        )
    data = data if data is not None else load_run_data(run)
    x, target = _test_inputs(run, data)
    test_images = len(x)
    if max_images is not None:
        x, target = x[:max_images], target[:max_images]
    torch_model = torch_model if torch_model is not None else load_run_model(run, "cpu")
    with backend_of(runtime).open(path, threads=threads) as runner, kit_errors():
        out = _outputs(runner, x, flip=flip)
        where = {
            "runtime": runner.runtime,
            "runtime_version": str(runner.runtime_version),
            "device": runner.device,
            "threads": runner.threads,
        }
    ref = _reference(run, model=torch_model, data=data, x=x, threads=threads, flip=flip)
    if task == "face":
        artifact, pytorch = face_figures(out, target), face_figures(ref, target)
        agreement = {
            "mean_cosine": float(
                np.mean(
                    np.sum(out * ref, axis=1)
                    / np.maximum(np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1), 1e-12)
                )
            )
        }
    else:
        artifact, pytorch = (classify_figures(o, target, shape.num_classes) for o in (out, ref))
        agreement = {"top1_agreement": 100.0 * float(np.mean(out.argmax(1) == ref.argmax(1)))}
    return {
        "run_dir": str(run.path),
        "model": str(path),
        "sha256": kit.file_sha256(path),
        **where,
        "task": task,
        "split": "test",
        "images": int(len(x)),
        "test_images": int(test_images),
        "pairs": int(len(target)) if task == "face" else None,
        "flip": flip,
        "metric": HEADLINE[task][1],
        "artifact": artifact,
        "pytorch": pytorch,
        **_compare(task, artifact, pytorch),
        **agreement,
        "stale": stale,
        "edgenas_version": __version__,
    }


def check_drop(result: dict, *, max_drop: float, flag: str = "--max-drop", figures: str | Path | None = None) -> None:
    """Raise ``AccuracyDropError`` when the file loses more than ``max_drop`` (a fraction: 0.01 = 1 pp)."""
    key, name = HEADLINE[result["task"]]
    if result["drop_pp"] > 100.0 * max_drop + 1e-9:  # 1e-9 pp: accuracies are exact fractions of the test split
        where = f" (figures in {figures})" if figures else ""
        raise AccuracyDropError(
            f"{Path(result['model']).name} loses {result['drop_pp']:.2f} pp of {name} against PyTorch "
            f"({result['pytorch'][key]:.2f}% -> {result['artifact'][key]:.2f}% on {result['images']} test images), "
            f"more than {flag} {100.0 * max_drop:g} pp{where}"
        )


def format_evaluation(r: dict) -> str:
    key, name = HEADLINE[r["task"]]
    a, p = r["artifact"], r["pytorch"]
    head = (
        f"{Path(r['model']).name} on {r['runtime']} {r['runtime_version']} ({r['device']}"
        + (f", {r['threads']} thread{'s' if r['threads'] != 1 else ''}" if r.get("threads") else "")
        + f"): {r['images']} test images"
        + (
            f" (the first of {r['test_images']}: --max-images)"
            if r.get("test_images", r["images"]) != r["images"]
            else ""
        )
        + (f", {r['pairs']} pairs" + (", flip" if r["flip"] else "") if r["task"] == "face" else "")
    )
    lines = [head, f"  {'':24} {'artifact':>10} {'PyTorch':>10} {'difference':>11}"]
    for k in COMPARED[r["task"]]:
        if a[k] is not None and p[k] is not None:
            label = f"top-{a['top5_k']}" if k == "top5" else k.replace("_", " ")
            lines.append(f"  {label:24} {a[k]:9.2f}% {p[k]:9.2f}% {a[k] - p[k]:+10.2f}")
    if "top1_agreement" in r:
        lines.append(f"  top-1 agreement with PyTorch {r['top1_agreement']:.2f}%")
    else:
        lines.append(
            f"  threshold {a['threshold']:.4f} (PyTorch {p['threshold']:.4f}); mean cosine to PyTorch "
            f"{r['mean_cosine']:.6f}"
        )
    lines.append(
        f"  {name}: {r['drop_pp']:+.2f} pp lost against PyTorch"
        if r["drop_pp"] > 0
        else f"  {name}: nothing lost against PyTorch"
    )
    if r.get("stale"):
        lines.append(f"  warning: {r['stale']}")
    return "\n".join(lines)
