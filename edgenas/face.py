"""The ``face`` task: an embedding network trained with an ArcFace margin over training identities,
ranked and reported by the standard verification protocol on pairs of held-out identities.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgenas.data import ImageData, Split, normalize
from edgenas.errors import DataError, UserInputError
from edgenas.network import Network
from edgenas.space import Arch
from edgenas.space import count_macs as _space_macs
from edgenas.space import count_params as _space_params

DATASETS = ("imagefolder", "lfw")
INPUT_SIZE = (112, 112)  # (H, W) when the profile sets no data.input_size: the usual aligned crop
FOLDS = 10  # the standard protocol's folds
FAR = 1e-3  # the false accept rate of the reported TAR
LFW_IMAGE_SETS = {"funneled": "lfw_funneled", "deepfunneled": "lfw-deepfunneled", "original": "lfw"}


# -- the network -----------------------------------------------------------------------------------
class EmbeddingNet(nn.Module):
    """The searched backbone (``Network``'s stem, layers, pool) -> Linear -> BatchNorm1d -> L2 norm.

    ``forward`` gives unit-length embeddings (what is exported); ``features`` the embedding before
    normalisation (what the margin head trains on, as ``train.fit`` calls it).
    """

    def __init__(self, arch: Arch, in_channels: int, embedding_dim: int):
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        backbone = Network(arch, in_channels, embedding_dim)
        self.arch, self.in_channels, self.embedding_dim = arch, in_channels, embedding_dim
        self.stem, self.layers, self.pool = backbone.stem, backbone.layers, backbone.pool
        self.embedding = backbone.classifier  # Linear(final width -> embedding_dim)
        self.bn = nn.BatchNorm1d(embedding_dim)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return Network.features(self, x)  # the backbone's pooled features, (N, final width)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.embedding(self.pooled(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.features(x), dim=1)


def count_params(arch: Arch, in_channels: int, embedding_dim: int) -> int:
    """Trainable parameters of ``EmbeddingNet`` (the deployed network; the margin head is not in it)."""
    return _space_params(arch, in_channels, embedding_dim) + 2 * embedding_dim  # + BatchNorm1d affine


def count_macs(arch: Arch, in_channels: int, embedding_dim: int, input_size: tuple[int, int]) -> int:
    """MACs of one image through ``EmbeddingNet``: convolutions and the embedding layer (BN folds away)."""
    return _space_macs(arch, in_channels, embedding_dim, input_size)


class ArcFace(nn.Module):
    """Additive angular margin head (training only): logits ``s * cos(theta + m)`` for the true
    identity, ``s * cos(theta)`` for the others, theta the angle between embedding and class centre.

    Where ``theta + m`` would pass pi the target logit becomes ``s * (cos theta - m sin m)``, which
    keeps falling with theta (insightface). Cosines are clamped to ``[-1 + EPS, 1 - EPS]`` before the
    sine is taken, so gradients stay finite at cos = +-1. Computed in float32 even under autocast.
    """

    EPS = 1e-6

    def __init__(self, embedding_dim: int, num_classes: int, scale: float = 64.0, margin: float = 0.5):
        super().__init__()
        if embedding_dim < 1 or num_classes < 2:
            raise ValueError(f"ArcFace needs embedding_dim >= 1 and >= 2 classes, got {embedding_dim}, {num_classes}")
        if scale <= 0 or not 0 <= margin < math.pi / 2:
            raise ValueError(f"ArcFace needs scale > 0 and margin in [0, pi/2), got {scale}, {margin}")
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.xavier_uniform_(self.weight)
        self.scale, self.margin = float(scale), float(margin)
        self.cos_m, self.sin_m = math.cos(margin), math.sin(margin)
        self.threshold = math.cos(math.pi - margin)  # cos theta below this: theta + m > pi
        self.fallback = math.sin(math.pi - margin) * margin

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(embeddings.float(), dim=1), F.normalize(self.weight.float(), dim=1))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.autocast(embeddings.device.type, enabled=False):
            cos = self.cosine(embeddings).clamp(-1.0 + self.EPS, 1.0 - self.EPS)
            target = cos.gather(1, labels.view(-1, 1))
            sin = torch.sqrt(1.0 - target * target)
            phi = target * self.cos_m - sin * self.sin_m  # cos(theta + m)
            phi = torch.where(target > self.threshold, phi, target - self.fallback)
            return cos.scatter(1, labels.view(-1, 1), phi) * self.scale


# -- verification metrics (numpy / scikit-learn) -----------------------------------------------------
@dataclass(frozen=True)
class Verification:
    """The standard protocol's figures. Accuracy, AUC and TAR in percent; thresholds on the cosine."""

    pairs: int
    same: int
    different: int
    folds: int
    accuracy: float  # mean over folds: threshold chosen on the other folds, applied to this one
    accuracy_std: float  # population std over the folds
    fold_accuracies: tuple[float, ...]
    fold_thresholds: tuple[float, ...]
    threshold: float  # the best threshold over all pairs: same person iff score > threshold
    best_accuracy: float  # accuracy at ``threshold`` on all pairs (optimistic: chosen on them)
    roc_auc: Optional[float]  # None when the pairs hold one kind only
    far: float  # the FAR of ``tar_at_far``
    tar_at_far: Optional[float]  # share of same pairs accepted at a threshold with FAR <= far
    far_floor: Optional[float]  # 1 / different pairs: FARs below it read as 0 false accepts

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


def _scores(scores, same) -> tuple[np.ndarray, np.ndarray]:
    s, y = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(same, dtype=bool).ravel()
    if s.shape != y.shape or len(s) == 0:
        raise ValueError(f"need one same/different label per score, got {len(s)} scores and {len(y)} labels")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite (the network produced NaN or infinite embeddings)")
    return s, y


def best_threshold(scores, same) -> tuple[float, float]:
    """(threshold, accuracy %) that maximise the accuracy of "same person iff score > threshold".

    Candidates are the midpoints between consecutive distinct scores, and the lowest score - 1 and
    highest + 1 (all "same", all "different"); ties go to the lowest threshold.
    """
    s, y = _scores(scores, same)
    order = np.argsort(s, kind="stable")
    s, y = s[order], y[order]
    n = len(s)
    # Cut k (0..n) calls s[k:] "same": correct = different ones below the cut + same ones above it.
    correct = np.concatenate([[0], np.cumsum(~y)]) + (y.sum() - np.concatenate([[0], np.cumsum(y)]))
    valid = np.ones(n + 1, dtype=bool)
    valid[1:n] = s[1:] > s[:-1]  # a cut between equal scores cannot be made
    k = int(np.flatnonzero(valid)[np.argmax(correct[valid])])
    threshold = s[0] - 1.0 if k == 0 else s[-1] + 1.0 if k == n else (s[k - 1] + s[k]) / 2.0
    return float(threshold), 100.0 * float(correct[k]) / n


def accuracy_at(scores, same, threshold: float) -> float:
    s, y = _scores(scores, same)
    return 100.0 * float(np.mean((s > threshold) == y))


def tar_at_far(scores, same, far: float = FAR) -> Optional[float]:
    """True accept rate (%) at the lowest threshold whose false accept rate is <= ``far``."""
    from sklearn.metrics import roc_curve

    s, y = _scores(scores, same)
    if y.all() or not y.any():
        return None
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)  # accept iff score >= threshold
    return 100.0 * float(tpr[fpr <= far].max())


def fold_ids(same, folds: int = FOLDS) -> np.ndarray:
    """A fold per pair, round-robin within same-person and within different-person pairs, so every
    fold is balanced like LFW's (unbalanced folds bias k-fold accuracy below chance)."""
    same = np.asarray(same, dtype=bool)
    out = np.empty(len(same), dtype=np.int64)
    for kind in (same, ~same):
        out[kind] = np.arange(int(kind.sum())) % max(1, min(folds, len(same) // 2))
    return out


def verify(scores, same, folds=None, far: float = FAR) -> Verification:
    """The standard protocol: k-fold accuracy (threshold from k-1 folds), best threshold, AUC, TAR@FAR.

    ``folds`` gives each pair's fold (default: ``fold_ids``, 10 balanced folds); it needs 2+ folds.
    """
    from sklearn.metrics import roc_auc_score

    s, y = _scores(scores, same)
    folds = fold_ids(y) if folds is None else np.asarray(folds)
    ids = np.unique(folds)
    if folds.shape != s.shape or len(ids) < 2:
        raise ValueError(f"need a fold per pair and at least 2 folds, got {len(ids)} fold(s) for {len(s)} pairs")
    accs, thresholds = [], []
    for f in ids:
        held = folds == f
        t, _ = best_threshold(s[~held], y[~held])
        accs.append(accuracy_at(s[held], y[held], t))
        thresholds.append(t)
    t, best = best_threshold(s, y)
    both = bool(y.any() and not y.all())
    return Verification(
        pairs=len(s), same=int(y.sum()), different=int((~y).sum()), folds=len(ids),
        accuracy=float(np.mean(accs)), accuracy_std=float(np.std(accs)),
        fold_accuracies=tuple(accs), fold_thresholds=tuple(thresholds), threshold=t, best_accuracy=best,
        roc_auc=100.0 * float(roc_auc_score(y, s)) if both else None,
        far=far, tar_at_far=tar_at_far(s, y, far), far_floor=1.0 / int((~y).sum()) if (~y).any() else None,
    )


# -- pairs -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pairs:
    """Verification pairs over a set of images: indices ``a``, ``b``, same person or not, fold."""

    a: np.ndarray  # int64
    b: np.ndarray  # int64
    same: np.ndarray  # bool
    folds: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.same)


def _draw_unique(rng, want: int, total: int, enumerate_all, draw_one) -> list[tuple[int, int]]:
    """``min(want, total)`` distinct pairs: drawn from all of them when few, else by rejection."""
    if total <= max(4 * want, 20000):
        every = enumerate_all()
        return [every[i] for i in sorted(rng.choice(len(every), min(want, len(every)), replace=False))]
    picked: dict[tuple[int, int], None] = {}
    while len(picked) < want:  # total > 4 * want: a draw is new with probability > 3/4
        i, j = draw_one()
        picked[(min(i, j), max(i, j))] = None
    return list(picked)


def make_pairs(labels, count: int, seed) -> Pairs:
    """Seeded, balanced pairs (``count // 2`` same-person, as many different-person, fewer if the
    images do not have them), shuffled, in round-robin folds. ``labels`` is an identity per image."""
    labels = np.asarray(labels)
    ids = np.unique(labels)
    groups = [np.flatnonzero(labels == i) for i in ids]
    multi = [g for g in groups if len(g) >= 2]
    if not multi or len(groups) < 2:
        raise DataError(f"verification pairs need 2+ identities, one with 2+ images; got {len(groups)} identities, {len(multi)} with 2+ images")
    rng = np.random.default_rng(seed)
    n_same = sum(len(g) * (len(g) - 1) // 2 for g in multi)
    sizes = np.array([len(g) for g in groups])
    n_diff = int((sizes.sum() ** 2 - (sizes ** 2).sum()) // 2)
    half = min(count // 2, n_same, n_diff)
    if half < 2:  # k-fold needs 2+ folds, each with a pair of each kind
        raise DataError(f"verification needs 2+ pairs of each kind; asked for {count} pairs (face.val_pairs), "
                        f"the held-out images have {n_same} same-person pairs: use face.val_pairs >= 4 and more images")

    def same_one():
        g = multi[rng.integers(len(multi))]
        i, j = rng.choice(len(g), 2, replace=False)
        return int(g[i]), int(g[j])

    def diff_one():
        gi, gj = rng.choice(len(groups), 2, replace=False)
        return int(rng.choice(groups[gi])), int(rng.choice(groups[gj]))

    same = _draw_unique(rng, half, n_same, lambda: [(int(g[i]), int(g[j])) for g in multi for i in range(len(g)) for j in range(i + 1, len(g))], same_one)
    diff = _draw_unique(rng, half, n_diff, lambda: [(int(min(p, q)), int(max(p, q))) for x, gx in enumerate(groups)
                                                    for gy in groups[x + 1:] for p in gx for q in gy], diff_one)
    ab = np.array(same + diff, dtype=np.int64)
    flags = np.array([True] * len(same) + [False] * len(diff))
    order = rng.permutation(len(flags))
    return Pairs(ab[order, 0], ab[order, 1], flags[order], fold_ids(flags[order]))


@dataclass(frozen=True)
class PairLine:
    """One line of an LFW-format pairs file: image ``number_a`` of ``name_a`` and ``number_b`` of ``name_b``."""

    name_a: str
    number_a: int
    name_b: str
    number_b: int
    fold: int
    line: int

    @property
    def same(self) -> bool:
        return self.name_a == self.name_b


def _pair_error(path, line: int, expected: str, got: str) -> UserInputError:
    return UserInputError(f"pairs file {path}, line {line}: expected {expected}, got {got.strip()!r}")


def read_pairs_file(path: str | Path) -> list[PairLine]:
    """Parse LFW's ``pairs.txt`` format: a header ``FOLDS N`` (or ``N`` for one set), then per fold
    ``2N`` lines, ``NAME I J`` (same person) or ``NAME1 I NAME2 J`` (different people), images
    numbered from 1. Folds are consecutive blocks of 2N lines; one set is cut into 10 balanced
    folds (``fold_ids``). Any deviation is a ``UserInputError`` naming the line and what was expected."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UserInputError(f"cannot read the pairs file {path} ({e})") from None
    lines = [(i, line.split()) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
    header = "a header 'FOLDS PAIRS_PER_FOLD' (e.g. '10 300') or 'PAIRS_PER_SET' (e.g. '1100')"
    if not lines:
        raise UserInputError(f"pairs file {path} is empty; expected {header} and pair lines")
    head_no, head = lines[0]
    if not 1 <= len(head) <= 2 or not all(f.isdigit() and int(f) > 0 for f in head):
        raise _pair_error(path, head_no, header, " ".join(head))
    sets, per = (int(head[0]), int(head[1])) if len(head) == 2 else (1, int(head[0]))
    if sets == 1 and per < 2:
        raise _pair_error(path, head_no, "2+ pairs of each kind in a one-set file (k-fold needs 2+ folds)", " ".join(head))
    body, want = lines[1:], sets * 2 * per
    shape = "'NAME I J' (same person) or 'NAME1 I NAME2 J' (different people), I and J image numbers from 1"
    out = []
    for index, (no, f) in enumerate(body):
        if index >= want:
            raise _pair_error(path, no, f"no more lines: the header promises {sets} x 2 x {per} = {want} pairs", " ".join(f))
        numbers = f[1:3] if len(f) == 3 else f[1:4:2]
        if len(f) not in (3, 4) or not all(n.isdigit() and int(n) > 0 for n in numbers):
            raise _pair_error(path, no, shape, " ".join(f))
        name_b = f[0] if len(f) == 3 else f[2]
        if len(f) == 4 and name_b == f[0]:
            raise _pair_error(path, no, "two different names on a 4-field (different-people) line", " ".join(f))
        out.append(PairLine(f[0], int(numbers[0]), name_b, int(numbers[1]), index // (2 * per), no))
    if len(out) < want:
        raise UserInputError(f"pairs file {path}: the header (line {head_no}) promises {sets} x 2 x {per} = {want} pairs, "
                             f"the file has {len(out)}")
    if sets == 1:  # one set (pairsDevTest style): 10 balanced folds
        folds = fold_ids([p.same for p in out])
        out = [dataclasses.replace(p, fold=int(f)) for p, f in zip(out, folds)]
    return out


def _image_files(folder: Path) -> list[Path]:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)


def resolve_pairs(lines: list[PairLine], root: Path, pairs_path) -> tuple[list[Path], Pairs]:
    """The image files a pairs file names under ``root`` (``NAME/NAME_0003.*``, else the 3rd image of
    ``NAME/`` in sorted order) and the ``Pairs`` over them. A missing image is a ``DataError``."""
    listing: dict[str, tuple[list[Path], dict[str, Path]]] = {}
    index: dict[Path, int] = {}

    def image(name: str, number: int, line: int) -> int:
        folder = root / name
        if name not in listing:
            if not folder.is_dir():
                raise DataError(f"pairs file {pairs_path}, line {line}: no folder {folder} for {name}; "
                                f"--data-dir must hold one folder per person")
            files = _image_files(folder)
            listing[name] = files, {p.stem: p for p in reversed(files)}
        files, by_stem = listing[name]
        path = by_stem.get(f"{name}_{number:04d}") or (files[number - 1] if number <= len(files) else None)
        if path is None:
            raise DataError(f"pairs file {pairs_path}, line {line}: {name} has no image {number} "
                            f"(no {name}_{number:04d}.* and {len(files)} image(s) in {folder})")
        return index.setdefault(path, len(index))

    a = [image(p.name_a, p.number_a, p.line) for p in lines]
    b = [image(p.name_b, p.number_b, p.line) for p in lines]
    pairs = Pairs(np.array(a, dtype=np.int64), np.array(b, dtype=np.int64), np.array([p.same for p in lines]),
                  np.array([p.fold for p in lines], dtype=np.int64))
    return list(index), pairs


# -- data ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FaceData(ImageData):
    """Identities split three ways: ``train`` (labels 0..K-1, the margin head's classes), ``val``
    and ``test`` (held-out identities; labels local to the split) with their verification pairs."""

    val_pairs: Optional[Pairs] = None
    test_pairs: Optional[Pairs] = None
    identities: tuple[tuple[str, ...], ...] = ((), (), ())  # train, val, test names
    image_root: str = ""  # the folder with one sub-folder per identity (where pairs files point)


def read_images(paths, input_size: tuple[int, int], channels: int) -> torch.Tensor:
    """Decode and resize image files to uint8 (N, C, H, W), as ``imagefolder`` data is read."""
    from PIL import Image

    mode, (h, w) = ("L" if channels == 1 else "RGB"), input_size
    out = np.empty((len(paths), h, w, channels), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as img:
                img = img.convert(mode).resize((w, h), Image.Resampling.BILINEAR, reducing_gap=None)
        except OSError as e:
            raise DataError(f"cannot read the image {path} ({' '.join(str(e).split())}); remove or replace it") from None
        out[i] = np.asarray(img).reshape(h, w, channels)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def image_root(name: str, data_dir: str | Path) -> Path:
    """The folder holding one sub-folder per identity: ``data_dir``, or LFW's images in it."""
    data_dir = Path(data_dir).expanduser()
    if name == "lfw":
        for folder in LFW_IMAGE_SETS.values():
            if (data_dir / "lfw-py" / folder).is_dir():
                return data_dir / "lfw-py" / folder
    return data_dir


def _list_lfw(data_dir: Path, download: bool) -> tuple[list[str], list[int], list[str], Path]:
    from torchvision.datasets import LFWPeople

    expected = f"{data_dir}/lfw-py/ with lfw-funneled.tgz, lfw_funneled/, people.txt, lfw-names.txt (torchvision's LFWPeople layout)"
    if download:
        raise DataError(f"lfw: torchvision can no longer download LFW; place the files yourself: {expected}")
    for image_set, folder in LFW_IMAGE_SETS.items():
        try:
            ds = LFWPeople(str(data_dir), split="10fold", image_set=image_set)
        except RuntimeError:  # "Dataset not found or corrupted"
            continue
        names = {i: n for n, i in ds.class_to_idx.items()}
        return list(ds.data), list(ds.targets), [names[i] for i in range(len(names))], Path(ds.images_dir)
    raise DataError(f"lfw: LFW files not found (or corrupt) in {data_dir}; expected {expected}")


def list_identities(name: str, data_dir, download: bool = False) -> tuple[list[str], np.ndarray, tuple[str, ...], Path]:
    """(image paths, identity per image, identity names, image root) of an identity dataset."""
    from torchvision.datasets import ImageFolder

    if name not in DATASETS:
        raise DataError(f"the face task reads identity images: --dataset imagefolder (one folder per person) or lfw, not {name!r}")
    if data_dir is None:
        raise DataError(f"dataset {name} needs a data directory: pass --data-dir DIR (one folder of face crops per person)")
    path = Path(data_dir).expanduser().resolve()
    if not path.is_dir():
        raise DataError(f"data directory {path} {'is not a directory' if path.exists() else 'does not exist'}; pass --data-dir with an existing directory")
    if name == "lfw":
        paths, targets, names, root = _list_lfw(path, download)
    else:
        try:
            folder = ImageFolder(str(path), allow_empty=True)
        except (FileNotFoundError, OSError) as e:
            raise DataError(f"imagefolder: {path} holds no identity folders ({' '.join(str(e).split())}); "
                            f"expected {path}/PERSON_NAME/IMAGE.png, one folder per person") from None
        paths, targets, names, root = [p for p, _ in folder.samples], [t for _, t in folder.samples], folder.classes, path
    used = np.unique(np.asarray(targets, dtype=np.int64))  # drop identities without images
    remap = np.full(len(names), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return paths, remap[np.asarray(targets, dtype=np.int64)], tuple(names[i] for i in used), root


def split_identities(counts, fraction: float, seed) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded (train, val, test) identity indices. ``fraction`` of the identities with 2+ images (at
    least 2) goes to each of val and test, and ``fraction`` of those with one image; the rest train."""
    counts = np.asarray(counts)
    rng = np.random.default_rng(seed)
    multi, single = np.flatnonzero(counts >= 2), np.flatnonzero(counts == 1)
    k_multi, k_single = max(2, int(round(fraction * len(multi)))), int(round(fraction * len(single)))
    if 2 * k_multi + 2 > len(multi) + len(single) - 2 * k_single or 2 * k_multi > len(multi):
        raise DataError(f"the face task needs more identities: {len(multi)} have 2+ images, {len(single)} one; "
                        f"{k_multi} with 2+ images go to each of validation and test (face.val_identities = {fraction}) "
                        f"and at least 2 must be left to train; add identities or lower face.val_identities")
    multi, single = rng.permutation(multi), rng.permutation(single)
    val = np.concatenate([multi[:k_multi], single[:k_single]])
    test = np.concatenate([multi[k_multi:2 * k_multi], single[k_single:2 * k_single]])
    train = np.concatenate([multi[2 * k_multi:], single[2 * k_single:]])
    return np.sort(train), np.sort(val), np.sort(test)


def _channel_stats(x: torch.Tensor, chunk: int = 256) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images in [0, 1] units, summed in float64 chunk by chunk."""
    total, squares = torch.zeros(x.shape[1], dtype=torch.float64), torch.zeros(x.shape[1], dtype=torch.float64)
    for i in range(0, len(x), chunk):
        v = x[i:i + chunk].transpose(0, 1).reshape(x.shape[1], -1).double() / 255.0
        total += v.sum(1)
        squares += (v * v).sum(1)
    n = max(1, x[:, 0].numel())
    mean = total / n
    std = (squares / n - mean * mean).clamp_min(0).sqrt()
    return tuple(float(m) for m in mean), tuple(float(s) if s > 1e-6 else 1.0 for s in std)


def load_faces(name: str, data_dir, *, input_size=None, channels=None, val_identities: float = 0.2,
               val_pairs: int = 600, seed: int = 0, download: bool = False) -> FaceData:
    """Load an identity dataset whole and split it by identity (seeded): training identities, and two
    held-out groups (each ``val_identities`` of them) with ``val_pairs`` balanced pairs each."""
    size = tuple(int(v) for v in (input_size or INPUT_SIZE))
    channels = channels or 3
    paths, labels, names, root = list_identities(name, data_dir, download)
    groups = split_identities(np.bincount(labels, minlength=len(names)), val_identities, [seed, 0])
    x = read_images(paths, size, channels)
    splits = []
    for ids in groups:
        local = np.full(len(names), -1, dtype=np.int64)
        local[ids] = np.arange(len(ids))
        take = np.flatnonzero(local[labels] >= 0)
        splits.append(Split(x[torch.from_numpy(take)].contiguous(), torch.from_numpy(local[labels[take]])))
    mean, std = _channel_stats(splits[0].x)
    return FaceData(
        name=name, train=splits[0], val=splits[1], test=splits[2], num_classes=len(groups[0]), in_channels=channels,
        input_size=size, mean=mean, std=std,
        class_names=tuple(names[i] for i in groups[0]), flip=True,
        val_pairs=make_pairs(splits[1].y.numpy(), val_pairs, [seed, 1]),
        test_pairs=make_pairs(splits[2].y.numpy(), val_pairs, [seed, 2]),
        identities=tuple(tuple(names[i] for i in g) for g in groups), image_root=str(root),
    )


# -- evaluation and the task ------------------------------------------------------------------------
@torch.inference_mode()
def embed(model: nn.Module, x: torch.Tensor, mean, std, device, batch_size: int = 256) -> np.ndarray:
    """Embeddings (N, D) float32 of uint8 images ``x``, normalised with ``mean``/``std``."""
    was_training = model.training
    model.eval()
    try:
        out = [model(normalize(x[i:i + batch_size].to(device), tuple(mean), tuple(std))).float().cpu()
               for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out).numpy()


def pair_scores(model: nn.Module, x: torch.Tensor, pairs: Pairs, mean, std, device) -> np.ndarray:
    """Cosine similarity of each pair's embeddings (images ``x``)."""
    e = embed(model, x, mean, std, device)
    return np.sum(e[pairs.a] * e[pairs.b], axis=1)


def evaluate_pairs(model: nn.Module, x: torch.Tensor, pairs: Pairs, mean, std, device) -> Verification:
    """The verification figures of ``model`` on ``pairs`` over the images ``x``."""
    return verify(pair_scores(model, x, pairs, mean, std, device), pairs.same, pairs.folds)


class FaceTask:
    """The task protocol of ``edgenas.tasks`` for face verification."""

    name = "face"
    metric = "verify acc"

    def load_data(self, name, data_dir, profile, seed, download) -> FaceData:
        f, d = profile.face, profile.data
        return load_faces(name, data_dir, input_size=d.input_size, channels=d.channels, val_identities=f.val_identities,
                          val_pairs=f.val_pairs, seed=seed, download=download)

    def extra_meta(self, data: FaceData) -> dict:
        pairs = {k: {"same": int(p.same.sum()), "different": int((~p.same).sum())}
                 for k, p in (("val", data.val_pairs), ("test", data.test_pairs))}
        return {"face": {"identities": dict(zip(("train", "val", "test"), map(len, data.identities))),
                         "images": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
                         "pairs": pairs, "image_root": data.image_root}}

    def outputs(self, data, profile) -> int:
        return profile.face.embedding_dim

    def model_size(self, arch: Arch, shape: dict, profile) -> tuple[int, int]:
        c, d = shape["in_channels"], profile.face.embedding_dim
        return count_params(arch, c, d), count_macs(arch, c, d, tuple(shape["input_size"]))

    def train(self, arch, data: FaceData, epochs, profile, device, seed, on_epoch=None):
        from edgenas.train import TrainResult, fit

        t0 = time.perf_counter()
        data, f = data.to(device), profile.face
        torch.manual_seed(seed)
        model = EmbeddingNet(arch, data.in_channels, f.embedding_dim)
        head = ArcFace(f.embedding_dim, data.num_classes, f.scale, f.margin)
        fitted = fit(model, data, epochs, profile.train, device, seed, on_epoch, head=head)
        status, acc = fitted.status, 0.0
        if status == "trained":
            scores = pair_scores(model, data.val.x, data.val_pairs, data.mean, data.std, device)
            if np.isfinite(scores).all():
                acc = verify(scores, data.val_pairs.same, data.val_pairs.folds).accuracy
            else:
                status = "failed"  # a finite loss can still leave non-finite embeddings
        return model, TrainResult(val_acc=acc, train_acc=fitted.train_acc, status=status, epochs=fitted.epochs,
                                  seconds=time.perf_counter() - t0, images_per_s=fitted.images_per_s, loss=fitted.loss)

    def test_metrics(self, model, data: FaceData, device) -> dict:
        v = evaluate_pairs(model, data.test.x, data.test_pairs, data.mean, data.std, device)
        out = {"test_verify_acc": v.accuracy, "test_verify_std": v.accuracy_std, "test_roc_auc": v.roc_auc}
        out["test_tar_at_far_1e-3"] = v.tar_at_far
        return {k: val for k, val in out.items() if val is not None}  # all in percent


# -- edgenas verify --------------------------------------------------------------------------------
def verify_run(run_dir, data_dir=None, pairs_file=None, device=None) -> dict:
    """Verification figures of a face run's network: on a pairs file (LFW format) of images under
    ``data_dir``, or on the run's held-out test identities. Returns what ``verify.json`` holds."""
    from edgenas import __version__
    from edgenas.profiles import stored_profile
    from edgenas.runs import RunDir
    from edgenas.train import select_device

    run = RunDir.open(run_dir)
    meta = run.meta
    if meta.get("task", "classify") != "face":
        raise UserInputError(f"{run.path} is a {meta.get('task', 'classify')} run; edgenas verify needs a face run "
                             f"(edgenas discover --task face)")
    dev = select_device(device)
    ds, shape = meta["dataset"], run.data_shape
    data_dir = data_dir or ds.get("data_dir")
    if not data_dir:
        raise UserInputError(f"--data-dir: {run.path} has no data directory on record; give the folder of identity images")
    if pairs_file:
        if not Path(data_dir).expanduser().is_dir():
            raise DataError(f"--data-dir {data_dir} is not a directory")
        root = image_root(ds["name"], data_dir)
        lines = read_pairs_file(pairs_file)
        paths, pairs = resolve_pairs(lines, root, pairs_file)
        x = read_images(paths, tuple(shape["input_size"]), shape["in_channels"])
        trained = set(shape["class_names"])
        seen = {p.name_a for p in lines} | {p.name_b for p in lines}
        source, overlap = str(pairs_file), len(seen & trained)
    else:
        task = FaceTask()
        data = task.load_data(ds["name"], data_dir, stored_profile(meta["profile"]), ds["split_seed"], False)
        x, pairs, root = data.test.x, data.test_pairs, Path(data.image_root)
        source, overlap = "held-out test identities", 0
    v = evaluate_pairs(run.load_model(str(dev)), x, pairs, shape["mean"], shape["std"], dev)
    return {"run_dir": str(run.path), "arch": str(run.arch()), "pairs_source": source,
            "data_dir": str(Path(data_dir).expanduser().resolve()), "image_root": str(root),
            "training_identities_in_pairs": overlap, **v.to_dict(), "edgenas_version": __version__}


def format_verification(r: dict) -> str:
    lines = [f"{r['arch']}: {r['pairs']} pairs ({r['same']} same, {r['different']} different) from {r['pairs_source']}",
             f"  accuracy      {r['accuracy']:.2f}% ± {r['accuracy_std']:.2f} ({r['folds']}-fold: threshold chosen on the other folds)",
             f"  threshold     {r['threshold']:.4f} cosine (best on all pairs: {r['best_accuracy']:.2f}%)"]
    if r["roc_auc"] is not None:
        lines.append(f"  ROC AUC       {r['roc_auc']:.2f}%")
    if r["tar_at_far"] is not None:
        note = (f" (only {r['different']} different pairs: this is TAR at 0 false accepts)"
                if r["far_floor"] > r["far"] else "")
        lines.append(f"  TAR@FAR={r['far']:.0e} {r['tar_at_far']:.2f}%{note}")
    if r["training_identities_in_pairs"]:
        lines.append(f"  warning: {r['training_identities_in_pairs']} identities of the pairs were used in training")
    return "\n".join(lines)
