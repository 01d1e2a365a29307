"""Face-verification statistics over scored pairs.

Inputs are one value per pair: ``scores`` (higher = more alike, e.g. cosine similarity
of the two embeddings), ``labels`` (True for a same-person pair) and, where needed,
``folds`` (fold id of the pair) and ``clusters`` (identity of the pair's first image).
A pair is predicted "same" when its score is ≥ the threshold.

Accuracy follows the LFW "unrestricted, labeled outside data" protocol as insightface's
``verification.py`` evaluates it: for each fold the threshold that maximises accuracy on
the *other* folds is applied to the fold, and the mean and population std over folds are
reported. Confidence intervals come from a cluster bootstrap over identities, since pairs
sharing a person are not independent.

Scores must be finite: a NaN (e.g. a failed embedding) raises :class:`M2FError`, and the
caller drops such pairs and reports how many. Unlike insightface's fixed threshold grid,
thresholds here are searched exactly over all midpoints between distinct scores, with
ties broken towards the smallest threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from m2f_bench.errors import M2FError

# Bootstrap resamples are evaluated in blocks of about this many (fold, resample, score)
# counts, to bound memory.
_BLOCK = 4_000_000


@dataclass(frozen=True)
class KFoldResult:
    """k-fold verification accuracy.

    Attributes:
        mean: Mean accuracy over folds.
        std: Population standard deviation over folds (``np.std``, as insightface).
        per_fold: Accuracy on each fold, in fold-id order.
        thresholds: Threshold chosen on the other folds and applied to each fold.
        fold_ids: The fold ids, sorted.
    """

    mean: float
    std: float
    per_fold: list[float]
    thresholds: list[float]
    fold_ids: list[int]


def _check_pairs(
    scores: np.ndarray, labels: np.ndarray, *others: tuple[str, np.ndarray]
) -> tuple[np.ndarray, ...]:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or scores.size == 0:
        raise M2FError(f"scores must be a non-empty 1-D array, got shape {scores.shape}")
    bad = int((~np.isfinite(scores)).sum())
    if bad:
        raise M2FError(
            f"{bad} of {scores.size} pair scores are NaN or infinite "
            "(failed embeddings?); drop those pairs and report how many"
        )
    labels = np.asarray(labels)
    if labels.dtype != np.bool_:
        if labels.dtype.kind not in "iu" or not np.isin(labels, (0, 1)).all():
            raise M2FError(f"labels must be bool (True = same person), got {labels.dtype}")
        labels = labels.astype(bool)
    if labels.shape != scores.shape:
        raise M2FError(f"labels must have one value per pair, shape {scores.shape}")
    checked = [scores, labels]
    for name, values in others:
        values = np.asarray(values)
        if values.shape != scores.shape:
            raise M2FError(f"{name} must have one value per pair, shape {scores.shape}")
        checked.append(values)
    return tuple(checked)


def _need_both_classes(labels: np.ndarray) -> None:
    if labels.all() or not labels.any():
        raise M2FError("needs both same-person and different-person pairs")


def _below(counts: np.ndarray) -> np.ndarray:
    """Cumulative counts of groups before each index: (B, k) → (B, k + 1), column 0 = 0."""
    out = np.zeros((counts.shape[0], counts.shape[1] + 1))
    np.cumsum(counts, axis=1, out=out[:, 1:])
    return out


def _best_thresholds(u: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Accuracy-maximising thresholds for B weighted pair sets over the same distinct scores.

    Args:
        u: Distinct scores, sorted ascending (k,).
        pos: Same-person pair counts at each distinct score (B, k); may be 0.
        neg: Different-person pair counts (B, k).

    Returns:
        (B,) thresholds: the midpoint between the highest rejected and the lowest
        accepted score present, -inf to accept all, +inf to reject all, NaN for no pairs.
    """
    k = u.size
    pos_below, neg_below = _below(pos), _below(neg)
    # Accepting the groups j..k-1 gets these pairs right; argmax takes the first maximum,
    # i.e. the smallest threshold.
    correct = pos_below[:, -1:] - pos_below + neg_below
    j = correct.argmax(axis=1)
    rows = np.arange(len(j))
    # At a first maximum j > 0 the group j - 1 holds pairs (else j - 1 would tie), so it
    # is the highest rejected score; the lowest accepted one is the next group with pairs.
    present = np.where((pos + neg) > 0, np.arange(k), k)
    next_present = np.minimum.accumulate(present[:, ::-1], axis=1)[:, ::-1]
    next_present = np.concatenate([next_present, np.full((len(j), 1), k)], axis=1)
    hi_index = next_present[rows, j]
    lo = np.where(j > 0, u[np.maximum(j - 1, 0)], -np.inf)
    hi = np.where(hi_index < k, u[np.minimum(hi_index, k - 1)], np.inf)
    with np.errstate(invalid="ignore"):
        return np.where(np.isinf(lo), np.where(np.isinf(hi), np.nan, -np.inf), (lo + hi) / 2)


def _accuracy_at(
    u: np.ndarray, thresholds: np.ndarray, pos: np.ndarray, neg: np.ndarray
) -> np.ndarray:
    """Accuracy of B weighted pair sets, each at its own threshold; NaN for no pairs."""
    first_accepted = np.searchsorted(u, thresholds, side="left")
    rows = np.arange(len(thresholds))
    pos_below, neg_below = _below(pos), _below(neg)
    at = (rows, first_accepted)
    correct = pos_below[:, -1] - pos_below[at] + neg_below[at]
    total = pos_below[:, -1] + neg_below[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(np.isnan(thresholds), np.nan, correct / total)


def _kfold_accuracies(
    u: np.ndarray, pos: np.ndarray, neg: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-fold accuracies and thresholds from counts (F, B, k) → two (F, B) arrays."""
    all_pos, all_neg = pos.sum(axis=0), neg.sum(axis=0)
    thresholds = np.stack(
        [_best_thresholds(u, all_pos - p, all_neg - n) for p, n in zip(pos, neg, strict=True)]
    )
    accuracies = np.stack(
        [_accuracy_at(u, t, p, n) for t, p, n in zip(thresholds, pos, neg, strict=True)]
    )
    return accuracies, thresholds


def _auc(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Mann–Whitney AUC from counts (B, k), ties counting one half; NaN for one class."""
    neg_strictly_below = np.cumsum(neg, axis=1) - neg
    wins = (pos * (neg_strictly_below + 0.5 * neg)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return wins / (pos.sum(axis=1) * neg.sum(axis=1))


class _PairCounts:
    """Pairs binned by distinct score, fold and label, for weighted (resampled) sets.

    ``members`` maps each pair to a row of the weight matrices passed to :meth:`counts`
    (its own index, or its cluster), so that resampling weights clusters, not pairs.
    """

    def __init__(self, scores, labels, folds, members: np.ndarray, n_members: int) -> None:
        self.u, bins = np.unique(scores, return_inverse=True)
        self.fold_ids = np.unique(folds)

        def matrix(keep: np.ndarray) -> sparse.csr_array:
            # Duplicate (member, bin) entries add up: a member's pair count per bin.
            data = (np.ones(int(keep.sum())), (members[keep], bins[keep]))
            return sparse.csr_array(data, shape=(n_members, self.u.size))

        self._pos = [matrix(labels & (folds == f)) for f in self.fold_ids]
        self._neg = [matrix(~labels & (folds == f)) for f in self.fold_ids]

    def counts(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Counts (F, B, k) of same- and different-person pairs for weights (B, members)."""
        pos = np.stack([(m.T @ weights.T).T for m in self._pos])
        neg = np.stack([(m.T @ weights.T).T for m in self._neg])
        return pos, neg


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The threshold that maximises verification accuracy on these pairs.

    Candidates are the midpoints between consecutive distinct scores plus both ends
    (-inf: accept all, +inf: reject all); of several best ones the smallest is returned.
    One sort and cumulative sums, O(N log N).

    Args:
        scores: Pair similarity scores (N,).
        labels: True for same-person pairs (N,).

    Returns:
        The threshold; a pair is predicted same-person when its score is ≥ it.
    """
    scores, labels = _check_pairs(scores, labels)
    u, bins = np.unique(scores, return_inverse=True)
    pos = np.bincount(bins[labels], minlength=u.size)[None].astype(np.float64)
    neg = np.bincount(bins[~labels], minlength=u.size)[None].astype(np.float64)
    return float(_best_thresholds(u, pos, neg)[0])


def kfold_accuracy(scores: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> KFoldResult:
    """k-fold verification accuracy, LFW protocol (insightface ``verification.py``).

    For each fold the threshold is chosen by :func:`best_threshold` on the pairs of all
    other folds and accuracy is measured on the fold. Any set of fold ids works (e.g.
    folds 6–10 only); a fold id with no pair simply does not occur.

    Args:
        scores: Pair similarity scores (N,).
        labels: True for same-person pairs (N,).
        folds: Fold id of each pair (N,).

    Returns:
        Mean and population std over folds, per-fold accuracies and thresholds.

    Raises:
        M2FError: Fewer than two folds, NaN scores, or mismatched lengths.
    """
    scores, labels, folds = _check_pairs(scores, labels, ("folds", folds))
    table = _PairCounts(scores, labels, folds, np.arange(scores.size), scores.size)
    if table.fold_ids.size < 2:
        raise M2FError(f"k-fold accuracy needs at least 2 folds, got {table.fold_ids.tolist()}")
    accuracies, thresholds = _kfold_accuracies(table.u, *table.counts(np.ones((1, scores.size))))
    per_fold = accuracies[:, 0]
    return KFoldResult(
        mean=float(per_fold.mean()),
        std=float(per_fold.std()),
        per_fold=per_fold.tolist(),
        thresholds=thresholds[:, 0].tolist(),
        fold_ids=table.fold_ids.tolist(),
    )


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC over every distinct score, as scikit-learn's ``roc_curve(drop_intermediate=False)``.

    Args:
        scores: Pair similarity scores (N,).
        labels: True for same-person pairs (N,).

    Returns:
        ``(far, tar, thresholds)``: false and true accept rates when accepting scores ≥
        each threshold, thresholds descending from ``+inf`` (accept nothing).

    Raises:
        M2FError: Only one kind of pair, or NaN scores.
    """
    scores, labels = _check_pairs(scores, labels)
    _need_both_classes(labels)
    u, bins = np.unique(scores, return_inverse=True)
    tp = np.cumsum(np.bincount(bins[labels], minlength=u.size)[::-1])
    fp = np.cumsum(np.bincount(bins[~labels], minlength=u.size)[::-1])
    far = np.concatenate([[0.0], fp / fp[-1]])
    tar = np.concatenate([[0.0], tp / tp[-1]])
    return far, tar, np.concatenate([[np.inf], u[::-1]])


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: P(same-person score > different-person score), ties ½.

    Args:
        scores: Pair similarity scores (N,).
        labels: True for same-person pairs (N,).

    Raises:
        M2FError: Only one kind of pair, or NaN scores.
    """
    scores, labels = _check_pairs(scores, labels)
    _need_both_classes(labels)
    u, bins = np.unique(scores, return_inverse=True)
    pos = np.bincount(bins[labels], minlength=u.size)[None].astype(np.float64)
    neg = np.bincount(bins[~labels], minlength=u.size)[None].astype(np.float64)
    return float(_auc(pos, neg)[0])


def eer(scores: np.ndarray, labels: np.ndarray) -> float:
    """Equal error rate: where FAR equals FRR = 1 − TAR on the ROC curve.

    FAR − FRR grows along the curve; the crossing is interpolated linearly between the
    two ROC points around it (exact when a point has FAR = FRR).

    Args:
        scores: Pair similarity scores (N,).
        labels: True for same-person pairs (N,).

    Raises:
        M2FError: Only one kind of pair, or NaN scores.
    """
    far, tar, _ = roc_curve(scores, labels)
    gap = far - (1.0 - tar)
    i = int(np.argmax(gap >= 0))  # gap ends at 1 (accept all), so a crossing exists
    if gap[i] == 0 or i == 0:
        return float(far[i])
    step = -gap[i - 1] / (gap[i] - gap[i - 1])
    return float(far[i - 1] + step * (far[i] - far[i - 1]))


def tar_at_far(scores: np.ndarray, labels: np.ndarray, far: float) -> float:
    """The highest true accept rate whose false accept rate is ≤ ``far``.

    The threshold is set on the different-person (impostor) scores: at most
    ``floor(far × n_impostor)`` impostor pairs may score ≥ it. With fewer than ``1/far``
    impostor pairs that is none, so the value is the fraction of same-person pairs that
    score above every impostor pair (e.g. FAR = 1e-3 on 1,500 impostor pairs allows
    exactly 1 accepted impostor).

    Args:
        scores: Pair similarity scores (N,).
        labels: True for same-person pairs (N,).
        far: Allowed false accept rate, in (0, 1].

    Raises:
        M2FError: ``far`` out of range, only one kind of pair, or NaN scores.
    """
    if not 0 < far <= 1:
        raise M2FError(f"far must be in (0, 1], got {far}")
    rates, tar, _ = roc_curve(scores, labels)
    n_impostor = int((~np.asarray(labels, dtype=bool)).sum())
    # Compare counts, not rates, so 3/300 is not rejected against 0.01 by rounding.
    accepted = np.rint(rates * n_impostor)
    return float(tar[accepted <= np.floor(far * n_impostor + 1e-9)].max())


def _cluster_counts(clusters: np.ndarray, n_boot: int, seed: int):
    """Cluster index of each item, and how often each cluster is drawn per resample."""
    ids, inverse = np.unique(np.asarray(clusters), return_inverse=True)
    n = ids.size
    draws = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    offsets = (np.arange(n_boot) * n)[:, None]
    counts = np.bincount((draws + offsets).ravel(), minlength=n_boot * n).reshape(n_boot, n)
    return inverse.ravel(), counts.astype(np.float64)


def _percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def _check_bootstrap(n_boot: int, level: float) -> None:
    if n_boot < 1:
        raise M2FError(f"n_boot must be at least 1, got {n_boot}")
    if not 0 < level < 1:
        raise M2FError(f"level must be in (0, 1), got {level}")


def bootstrap_ci(
    statistic: Callable[[np.ndarray], float],
    clusters: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile confidence interval from a cluster bootstrap.

    Each resample draws as many clusters as there are, with replacement, and takes every
    item of each drawn cluster (twice if drawn twice). For pairs the cluster is the
    identity of the pair's first image. Resamples where the statistic is NaN are left out.

    Args:
        statistic: Maps item indices (with repeats) to a number.
        clusters: Cluster of each item (N,), any hashable values.
        n_boot: Number of resamples.
        seed: Seed of the resampling; the same seed gives the same interval.
        level: Coverage of the interval.

    Returns:
        ``(low, high)`` percentiles of the statistic; NaN if every resample gave NaN.
    """
    _check_bootstrap(n_boot, level)
    inverse, counts = _cluster_counts(clusters, n_boot, seed)
    order = np.argsort(inverse, kind="stable")
    sizes = np.bincount(inverse)
    starts = np.cumsum(sizes) - sizes
    values = np.empty(n_boot)
    for b, drawn in enumerate(counts.astype(np.int64)):
        chosen = np.repeat(np.arange(sizes.size), drawn)
        lengths = sizes[chosen]
        shift = np.repeat(starts[chosen] - (np.cumsum(lengths) - lengths), lengths)
        values[b] = statistic(order[shift + np.arange(lengths.sum())])
    return _percentile_interval(values, level)


def _far_key(far: float) -> str:
    return "tar_far" + np.format_float_scientific(far, trim="-", exp_digits=1)


def verification_summary(
    scores: np.ndarray,
    labels: np.ndarray,
    folds: np.ndarray,
    clusters: np.ndarray,
    *,
    fars: Sequence[float] = (1e-3, 1e-2),
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float | int]:
    """Every verification number of one condition, with cluster-bootstrap intervals.

    The accuracy interval re-runs :func:`kfold_accuracy` on each resample, each pair
    keeping its fold (a fold left with no pair is skipped in that resample's mean, and a
    resample left with one fold, or with one kind of pair for AUC, is left out); the AUC
    interval recomputes :func:`roc_auc`. Both use the same resamples, the ones
    :func:`bootstrap_ci` draws for this seed, evaluated in a vectorised form.

    Args:
        scores: Pair similarity scores (N,).
        labels: True for same-person pairs (N,).
        folds: Fold id of each pair (N,).
        clusters: Identity of each pair's first image (N,).
        fars: False accept rates for ``tar_far…`` keys.
        n_boot: Bootstrap resamples.
        seed: Seed of the resampling.
        level: Coverage of the intervals.

    Returns:
        ``acc_mean, acc_std, auc, eer``, ``tar_far1e-3``-style keys for ``fars``,
        ``acc_ci_low, acc_ci_high, auc_ci_low, auc_ci_high, n_pairs, n_impostor``.

    Raises:
        M2FError: NaN scores, mismatched lengths, fewer than two folds or one kind of pair.
    """
    scores, labels, folds, clusters = _check_pairs(
        scores, labels, ("folds", folds), ("clusters", clusters)
    )
    _check_bootstrap(n_boot, level)
    accuracy = kfold_accuracy(scores, labels, folds)
    summary: dict[str, float | int] = {
        "acc_mean": accuracy.mean,
        "acc_std": accuracy.std,
        "auc": roc_auc(scores, labels),
        "eer": eer(scores, labels),
    }
    for far in fars:
        summary[_far_key(far)] = tar_at_far(scores, labels, far)

    members, counts = _cluster_counts(clusters, n_boot, seed)
    boot = _resampled_statistics(scores, labels, folds, members, counts, fars=())
    boot_acc, boot_auc = boot["acc"], boot["auc"]
    summary["acc_ci_low"], summary["acc_ci_high"] = _percentile_interval(boot_acc, level)
    summary["auc_ci_low"], summary["auc_ci_high"] = _percentile_interval(boot_auc, level)
    summary["n_pairs"] = int(scores.size)
    summary["n_impostor"] = int((~labels).sum())
    return summary


def _boot_tar(pos: np.ndarray, neg: np.ndarray, far: float) -> np.ndarray:
    """TAR@FAR of resampled counts (B, k) over distinct scores, as :func:`tar_at_far`."""
    # Accepting every score ≥ u_j: counts of pairs at or above each distinct score.
    pos_above = np.cumsum(pos[:, ::-1], axis=1)[:, ::-1]
    neg_above = np.cumsum(neg[:, ::-1], axis=1)[:, ::-1]
    n_pos, n_neg = pos.sum(axis=1, keepdims=True), neg.sum(axis=1, keepdims=True)
    allowed = np.floor(far * n_neg + 1e-9)
    accepted = np.where(neg_above <= allowed, pos_above, 0.0).max(axis=1, initial=0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        # One kind of pair only: no TAR, as tar_at_far refuses (left out like AUC's NaN).
        return np.where((n_pos[:, 0] > 0) & (n_neg[:, 0] > 0), accepted / n_pos[:, 0], np.nan)


def _resampled_statistics(
    scores: np.ndarray,
    labels: np.ndarray,
    folds: np.ndarray,
    members: np.ndarray,
    counts: np.ndarray,
    fars: Sequence[float],
) -> dict[str, np.ndarray]:
    """k-fold accuracy, AUC and TAR@FAR of each resample (weights ``counts``: B×clusters)."""
    table = _PairCounts(scores, labels, folds, members, counts.shape[1])
    n_boot = counts.shape[0]
    out = {"acc": np.empty(n_boot), "auc": np.empty(n_boot)}
    out |= {_far_key(far): np.empty(n_boot) for far in fars}
    block = max(1, _BLOCK // (table.fold_ids.size * table.u.size))
    for start in range(0, n_boot, block):
        rows = slice(start, start + block)
        pos, neg = table.counts(counts[rows])
        fold_acc, _ = _kfold_accuracies(table.u, pos, neg)
        with np.errstate(invalid="ignore"):
            present = ~np.isnan(fold_acc)
            out["acc"][rows] = np.where(present, fold_acc, 0).sum(axis=0) / present.sum(axis=0)
        total_pos, total_neg = pos.sum(axis=0), neg.sum(axis=0)
        out["auc"][rows] = _auc(total_pos, total_neg)
        for far in fars:
            out[_far_key(far)][rows] = _boot_tar(total_pos, total_neg, far)
    return out


def paired_difference(
    scores: np.ndarray,
    baseline_scores: np.ndarray,
    labels: np.ndarray,
    folds: np.ndarray,
    clusters: np.ndarray,
    *,
    fars: Sequence[float] = (1e-3, 1e-2),
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float | bool]:
    """Accuracy, AUC and TAR@FAR of one condition minus a baseline on the same pairs.

    Paired: each resample of identities (the clusters, as in :func:`bootstrap_ci`) is
    evaluated under both conditions and the difference taken, so the interval reflects
    the spread of the difference, not of the two values separately.

    Args:
        scores: Pair scores of the condition (N,), e.g. inpainted↔clean.
        baseline_scores: Scores of the same pairs in the baseline condition (N,),
            e.g. masked↔clean.
        labels, folds, clusters: As in :func:`verification_summary`.

    Returns:
        ``d_acc, d_auc`` and ``d_tar_far…`` keys (point differences), each with
        ``_ci_low``/``_ci_high``; ``tar_far…_reliable`` is False when there are fewer than
        ``10 / far`` impostor pairs (the TAR then rests on a handful of impostors).
    """
    scores, labels, folds, clusters = _check_pairs(
        scores, labels, ("folds", folds), ("clusters", clusters)
    )
    baseline_scores, *_ = _check_pairs(baseline_scores, labels)
    _check_bootstrap(n_boot, level)
    point = {
        "acc": kfold_accuracy(scores, labels, folds).mean
        - kfold_accuracy(baseline_scores, labels, folds).mean,
        "auc": roc_auc(scores, labels) - roc_auc(baseline_scores, labels),
    }
    for far in fars:
        point[_far_key(far)] = tar_at_far(scores, labels, far) - tar_at_far(
            baseline_scores, labels, far
        )
    members, counts = _cluster_counts(clusters, n_boot, seed)
    boot = _resampled_statistics(scores, labels, folds, members, counts, fars)
    boot_base = _resampled_statistics(baseline_scores, labels, folds, members, counts, fars)
    n_impostor = int((~labels).sum())
    out: dict[str, float | bool] = {}
    for key, value in point.items():
        low, high = _percentile_interval(boot[key] - boot_base[key], level)
        out |= {f"d_{key}": float(value), f"d_{key}_ci_low": low, f"d_{key}_ci_high": high}
    for far in fars:
        out[f"{_far_key(far)}_reliable"] = n_impostor >= 10 / far
    return out
