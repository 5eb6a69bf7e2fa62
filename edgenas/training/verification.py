"""The standard face-verification protocol: pairs (drawn, or read from LFW ``pairs.txt`` files)
and metrics over pair scores — k-fold accuracy, best threshold, ROC AUC, TAR at a FAR. numpy/sklearn only.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgenas.errors import DataError, UserInputError
from edgenas.training.images import image_extensions

FOLDS = 10  # the standard protocol's folds
FAR = 1e-3  # the false accept rate of the reported TAR


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
    roc_auc: float | None  # None when the pairs hold one kind only
    far: float  # the FAR of ``tar_at_far``
    tar_at_far: float | None  # share of same pairs accepted at a threshold with FAR <= far
    far_floor: float | None  # 1 / different pairs: FARs below it read as 0 false accepts

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


def _scores(scores, same) -> tuple[np.ndarray, np.ndarray]:
    s, y = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(same, dtype=bool).ravel()
    if s.shape != y.shape or len(s) == 0:
        raise ValueError(f"need one same/different label per score, got {len(s)} scores and {len(y)} labels")
    if not np.isfinite(s).all():
        raise ValueError(
            f"{int((~np.isfinite(s)).sum())} of {len(s)} scores are NaN or infinite "
            f"(the network produced NaN or infinite embeddings)"
        )
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


def tar_at_far(scores, same, far: float = FAR) -> float | None:
    """True accept rate (%) at the lowest threshold whose false accept rate is <= ``far``."""
    from sklearn.metrics import roc_curve

    s, y = _scores(scores, same)
    if y.all() or not y.any():
        return None
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)  # accept iff score >= threshold
    return 100.0 * float(tpr[fpr <= far].max())


def roc_points(scores, same, max_points: int = 200) -> dict | None:
    """The ROC curve as false/true accept rates (0..1), at most ``max_points`` of its corners, for
    ``edgenas report``; None when the pairs hold one kind only."""
    from sklearn.metrics import roc_curve

    s, y = _scores(scores, same)
    if y.all() or not y.any():
        return None
    fpr, tpr, _ = roc_curve(y, s)
    if len(fpr) > max_points:
        keep = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return {"fpr": [round(float(f), 6) for f in fpr], "tpr": [round(float(t), 6) for t in tpr]}


def fold_ids(same, folds: int = FOLDS) -> np.ndarray:
    """A fold per pair, round-robin within same-person and within different-person pairs, so every
    fold is balanced like LFW's (unbalanced folds bias k-fold accuracy below chance)."""
    same = np.asarray(same, dtype=bool)
    out = np.empty(len(same), dtype=np.int64)
    for kind in (same, ~same):
        out[kind] = np.arange(int(kind.sum())) % max(1, min(folds, len(same) // 2))
    return out


def verify(scores, *, same, folds=None, far: float = FAR) -> Verification:
    """The standard protocol: k-fold accuracy (threshold from k-1 folds), best threshold, AUC, TAR@FAR.

    ``folds`` gives each pair's fold (default: ``fold_ids``, 10 balanced folds); it needs 2+ folds.
    """
    from sklearn.metrics import roc_auc_score

    s, y = _scores(scores, same)
    if y.all() or not y.any():  # every threshold below (or above) all scores would score 100 %
        raise ValueError(
            f"all {len(y)} pairs are {'same-person' if y.all() else 'different-people'} pairs; "
            f"verification needs pairs of both kinds"
        )
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
        pairs=len(s),
        same=int(y.sum()),
        different=int((~y).sum()),
        folds=len(ids),
        accuracy=float(np.mean(accs)),
        accuracy_std=float(np.std(accs)),
        fold_accuracies=tuple(accs),
        fold_thresholds=tuple(thresholds),
        threshold=t,
        best_accuracy=best,
        roc_auc=100.0 * float(roc_auc_score(y, s)) if both else None,
        far=far,
        tar_at_far=tar_at_far(s, y, far),
        far_floor=1.0 / int((~y).sum()) if (~y).any() else None,
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


def _draw_unique(rng, *, want: int, total: int, enumerate_all, draw_one) -> list[tuple[int, int]]:
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
        raise DataError(
            f"verification pairs need 2+ identities, one with 2+ images; got {len(groups)} identities, {len(multi)} with 2+ images"
        )
    rng = np.random.default_rng(seed)
    n_same = sum(len(g) * (len(g) - 1) // 2 for g in multi)
    sizes = np.array([len(g) for g in groups])
    n_diff = int((sizes.sum() ** 2 - (sizes**2).sum()) // 2)
    half = min(count // 2, n_same, n_diff)
    if half < 2:  # k-fold needs 2+ folds, each with a pair of each kind
        raise DataError(
            f"verification needs 2+ pairs of each kind; asked for {count} pairs (face.val_pairs), "
            f"the held-out images have {n_same} same-person pairs: use face.val_pairs >= 4 and more images"
        )

    def same_one():
        g = multi[rng.integers(len(multi))]
        i, j = rng.choice(len(g), 2, replace=False)
        return int(g[i]), int(g[j])

    def diff_one():
        gi, gj = rng.choice(len(groups), 2, replace=False)
        return int(rng.choice(groups[gi])), int(rng.choice(groups[gj]))

    same = _draw_unique(
        rng,
        want=half,
        total=n_same,
        enumerate_all=lambda: [
            (int(g[i]), int(g[j])) for g in multi for i in range(len(g)) for j in range(i + 1, len(g))
        ],
        draw_one=same_one,
    )
    diff = _draw_unique(
        rng,
        want=half,
        total=n_diff,
        enumerate_all=lambda: [
            (int(min(p, q)), int(max(p, q)))
            for x, gx in enumerate(groups)
            for gy in groups[x + 1 :]
            for p in gx
            for q in gy
        ],
        draw_one=diff_one,
    )
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


def _pair_error(path, *, line: int, expected: str, got: str) -> UserInputError:
    return UserInputError(f"pairs file {path}, line {line}: expected {expected}, got {got.strip()!r}")


_NUMBER = re.compile(r"0*[1-9][0-9]{0,8}")  # 1 .. 999,999,999 in ASCII digits (int() of 5000 digits raises)
_SHAPE = "'NAME I J' (same person) or 'NAME1 I NAME2 J' (different people), I and J image numbers from 1"
_HEADER = "a header 'FOLDS PAIRS_PER_FOLD' (e.g. '10 300') or 'PAIRS_PER_SET' (e.g. '1100')"


def _is_number(field: str) -> bool:
    return _NUMBER.fullmatch(field) is not None


def _bad_name(name: str) -> bool:
    """A name that is not one folder under the image root (a path, '..', a control character)."""
    return name in (".", "..") or "/" in name or "\\" in name or not name.isprintable()


def _pair_line(path, *, no: int, f: list[str], fold: int) -> PairLine:
    numbers = f[1:3] if len(f) == 3 else f[1:4:2]
    if len(f) not in (3, 4) or not all(_is_number(n) for n in numbers):
        raise _pair_error(path, line=no, expected=_SHAPE, got=" ".join(f))
    name_b = f[0] if len(f) == 3 else f[2]
    if len(f) == 4 and name_b == f[0]:
        raise _pair_error(
            path, line=no, expected="two different names on a 4-field (different-people) line", got=" ".join(f)
        )
    if len(f) == 3 and numbers[0] == numbers[1]:
        raise _pair_error(path, line=no, expected="two different image numbers on a same-person line", got=" ".join(f))
    if _bad_name(f[0]) or _bad_name(name_b):
        raise _pair_error(
            path,
            line=no,
            expected="person names that are folder names (no '/', '\\', '..' or control characters)",
            got=" ".join(f),
        )
    return PairLine(f[0], int(numbers[0]), name_b, int(numbers[1]), fold, no)


def _check_kinds(path, *, out: list[PairLine], sets: int, per: int) -> None:
    """Every fold holds ``per`` pairs of each kind, as the header promises (one kind cannot be scored)."""
    for fold in range(sets):
        block = out[fold * 2 * per : (fold + 1) * 2 * per]
        same = sum(p.same for p in block)
        if same != per:
            where = f"fold {fold + 1} (lines {block[0].line}-{block[-1].line})" if sets > 1 else "the file"
            raise UserInputError(
                f"pairs file {path}: {where} has {same} same-person and {len(block) - same} "
                f"different-people pairs; the header promises {per} of each"
            )


def read_pairs_file(path: str | Path) -> list[PairLine]:
    """Parse LFW's ``pairs.txt`` format: a header ``FOLDS N`` (or ``N`` for one set), then per fold
    ``2N`` lines, N ``NAME I J`` (same person) and N ``NAME1 I NAME2 J`` (different people), images
    numbered from 1. Folds are consecutive blocks of 2N lines; one set is cut into 10 balanced
    folds (``fold_ids``). Any deviation is a ``UserInputError`` naming the line and what was expected."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors) is not a header
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserInputError(f"cannot read the pairs file {path} ({' '.join(str(e).split())})") from None
    lines = [(i, line.split()) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise UserInputError(f"pairs file {path} is empty; expected {_HEADER} and pair lines")
    head_no, head = lines[0]
    if not 1 <= len(head) <= 2 or not all(_is_number(f) for f in head):
        raise _pair_error(path, line=head_no, expected=_HEADER, got=" ".join(head))
    sets, per = (int(head[0]), int(head[1])) if len(head) == 2 else (1, int(head[0]))
    if sets == 1 and per < 2:
        raise _pair_error(
            path,
            line=head_no,
            expected="2+ pairs of each kind in a one-set file (k-fold needs 2+ folds)",
            got=" ".join(head),
        )
    body, want = lines[1:], sets * 2 * per
    out = []
    for index, (no, f) in enumerate(body):
        if index >= want:
            raise _pair_error(
                path,
                line=no,
                expected=f"no more lines: the header promises {sets} x 2 x {per} = {want} pairs",
                got=" ".join(f),
            )
        out.append(_pair_line(path, no=no, f=f, fold=index // (2 * per)))
    if len(out) < want:
        raise UserInputError(
            f"pairs file {path}: the header (line {head_no}) promises {sets} x 2 x {per} = {want} pairs, "
            f"the file has {len(out)}"
        )
    _check_kinds(path, out=out, sets=sets, per=per)
    if sets == 1:  # one set (pairsDevTest style): 10 balanced folds
        folds = fold_ids([p.same for p in out])
        out = [dataclasses.replace(p, fold=int(f)) for p, f in zip(out, folds)]
    return out


def _image_files(folder: Path) -> list[Path]:
    extensions = image_extensions()
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in extensions
    )


def resolve_pairs(lines: list[PairLine], root: Path, pairs_path) -> tuple[list[Path], Pairs]:
    """The image files a pairs file names under ``root`` (``NAME/NAME_0003.*``, else the 3rd image of
    ``NAME/`` in sorted order) and the ``Pairs`` over them. A missing image is a ``DataError``."""
    listing: dict[str, tuple[list[Path], dict[str, Path]]] = {}
    index: dict[Path, int] = {}

    def image(name: str, number: int, line: int) -> int:
        folder = root / name
        if name not in listing:
            try:
                is_dir = folder.is_dir()
            except OSError:  # e.g. a name longer than the file system allows
                is_dir = False
            if not is_dir:
                raise DataError(
                    f"pairs file {pairs_path}, line {line}: no folder {folder} for {name}; "
                    f"--data-dir must hold one folder per person"
                )
            try:
                files = _image_files(folder)
            except OSError as e:
                raise DataError(
                    f"pairs file {pairs_path}, line {line}: cannot list {folder} ({' '.join(str(e).split())})"
                ) from None
            listing[name] = files, {p.stem: p for p in reversed(files)}
        files, by_stem = listing[name]
        path = by_stem.get(f"{name}_{number:04d}") or (files[number - 1] if number <= len(files) else None)
        if path is None:
            raise DataError(
                f"pairs file {pairs_path}, line {line}: {name} has no image {number} "
                f"(no {name}_{number:04d}.* and {len(files)} image(s) in {folder})"
            )
        return index.setdefault(path, len(index))

    a = [image(p.name_a, p.number_a, p.line) for p in lines]
    b = [image(p.name_b, p.number_b, p.line) for p in lines]
    pairs = Pairs(
        np.array(a, dtype=np.int64),
        np.array(b, dtype=np.int64),
        np.array([p.same for p in lines]),
        np.array([p.fold for p in lines], dtype=np.int64),
    )
    return list(index), pairs
