from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sklearn_roc_curve

from m2f_bench.errors import M2FError
from m2f_bench.metrics.verification import (
    best_threshold,
    bootstrap_ci,
    eer,
    kfold_accuracy,
    roc_auc,
    roc_curve,
    tar_at_far,
    verification_summary,
)

T, F = True, False


def random_pairs(n: int, seed: int, n_clusters: int = 60, separation: float = 1.5):
    """Scores with ties (rounded), labels, 10 folds and identity clusters."""
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.5
    scores = np.round(rng.normal(labels * separation, 1.0), 1)
    folds = np.arange(n) % 10
    clusters = rng.integers(0, n_clusters, n)
    return scores, labels, folds, clusters


def naive_best_threshold(scores, labels) -> tuple[float, float]:
    """Smallest best threshold and its accuracy, by trying every candidate in turn."""
    distinct = np.unique(scores)
    candidates = [-np.inf, *((distinct[:-1] + distinct[1:]) / 2), np.inf]
    accuracies = [np.mean((scores >= t) == labels) for t in candidates]
    best = int(np.argmax(accuracies))
    return candidates[best], accuracies[best]


def test_best_threshold_hand_example_takes_the_smallest_of_tied_thresholds():
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    labels = np.array([F, F, T, F, T, T])
    # 0.25 and 0.45 both get 5 of 6 right.
    assert best_threshold(scores, labels) == pytest.approx(0.25)


def test_best_threshold_ends_and_tied_scores():
    scores = np.array([0.2, 0.5, 0.8])
    assert best_threshold(scores, np.array([T, T, T])) == -np.inf
    assert best_threshold(scores, np.array([F, F, F])) == np.inf
    # One score shared by a same and a different pair cannot be split.
    assert best_threshold(np.array([0.5, 0.5]), np.array([T, F])) == -np.inf


@pytest.mark.parametrize("seed", range(5))
def test_best_threshold_equals_exhaustive_search(seed):
    scores, labels, _, _ = random_pairs(80, seed)
    want, _ = naive_best_threshold(scores, labels)
    assert best_threshold(scores, labels) == pytest.approx(want)


def test_kfold_threshold_comes_from_the_other_folds():
    # Folds 1 and 2 separate cleanly at 0.5; fold 0 is inverted, so its own data would
    # never pick 0.5, and on folds {0, 2} or {0, 1} no threshold beats accepting all.
    scores = np.array([0.1, 0.9, 0.6, 0.4, 0.7, 0.3])
    labels = np.array([T, F, T, F, T, F])
    folds = np.array([0, 0, 1, 1, 2, 2])
    result = kfold_accuracy(scores, labels, folds)
    assert result.thresholds == [pytest.approx(0.5), -np.inf, -np.inf]
    assert result.per_fold == [0.0, 0.5, 0.5]
    assert result.mean == pytest.approx(1 / 3)
    assert result.std == pytest.approx(np.std([0.0, 0.5, 0.5]))
    assert result.fold_ids == [0, 1, 2]

    shifted = kfold_accuracy(scores, labels, folds + 6)  # e.g. folds 6–10 only
    assert shifted.fold_ids == [6, 7, 8] and shifted.per_fold == result.per_fold


def test_kfold_accepts_a_test_score_equal_to_the_threshold():
    # Folds 1 and 2 put the threshold at 0.5, exactly fold 0's same-person score.
    scores = np.array([0.5, 0.6, 0.4, 0.7, 0.3])
    labels = np.array([T, T, F, T, F])
    result = kfold_accuracy(scores, labels, np.array([0, 1, 1, 2, 2]))
    assert result.thresholds[0] == 0.5 and result.per_fold[0] == 1.0


@pytest.mark.parametrize("seed", range(3))
def test_kfold_accuracy_equals_naive_protocol(seed):
    scores, labels, folds, _ = random_pairs(120, seed)
    result = kfold_accuracy(scores, labels, folds)
    for i, fold in enumerate(np.unique(folds)):
        test = folds == fold
        threshold, _ = naive_best_threshold(scores[~test], labels[~test])
        assert result.thresholds[i] == pytest.approx(threshold)
        assert result.per_fold[i] == pytest.approx(
            np.mean((scores[test] >= threshold) == labels[test])
        )
    assert result.mean == pytest.approx(np.mean(result.per_fold))
    assert result.std == pytest.approx(np.std(result.per_fold))


def test_auc_and_roc_curve_equal_scikit_learn():
    scores, labels, _, _ = random_pairs(300, 1)  # rounded scores: many ties
    assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    far, tar, thresholds = roc_curve(scores, labels)
    want_far, want_tar, want_thresholds = sklearn_roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(far, want_far)
    np.testing.assert_allclose(tar, want_tar)
    np.testing.assert_array_equal(thresholds, want_thresholds)


def test_eer_known_cases():
    assert eer(np.array([0.9, 0.8, 0.2, 0.1]), np.array([T, T, F, F])) == 0.0
    # Impostors 0..9, genuines 5.5..14.5: a threshold in (7, 7.5] accepts impostors 8, 9
    # and rejects genuines 5.5, 6.5, i.e. FAR = FRR = 0.2.
    impostors, genuines = np.arange(10.0), np.arange(10.0) + 5.5
    scores = np.concatenate([impostors, genuines])
    labels = np.repeat([F, T], 10)
    assert eer(scores, labels) == pytest.approx(0.2)
    # A genuine and an impostor tie at 1: the ROC jumps from (FAR 0, TAR .5) to
    # (.5, 1) and crosses FAR = FRR halfway, at 0.25.
    assert eer(np.array([2.0, 1.0, 1.0, 0.0]), np.array([T, T, F, F])) == pytest.approx(0.25)


def test_tar_at_far_on_constructed_example():
    impostors = np.arange(100.0)
    genuines = np.array([100.5, 99.5, 98.5, 97.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5])
    scores = np.concatenate([impostors, genuines])
    labels = np.concatenate([np.zeros(100, bool), np.ones(10, bool)])
    # Fewer than 1/far impostors: none may be accepted, so only scores above 99 count.
    assert tar_at_far(scores, labels, 1e-3) == pytest.approx(0.2)
    # One impostor (99) accepted: the threshold may drop to just above 98.
    assert tar_at_far(scores, labels, 1e-2) == pytest.approx(0.3)
    assert tar_at_far(scores, labels, 2e-2) == pytest.approx(0.4)
    assert tar_at_far(scores, labels, 3e-2) == pytest.approx(0.4)  # next genuine is far down
    assert tar_at_far(scores, labels, 1.0) == 1.0


def test_tar_at_far_allows_exactly_far_times_impostors():
    # 3 of 300 impostors is FAR 0.01 exactly and must be allowed despite rounding; the
    # genuine 296.5 needs impostors 297-299 accepted.
    scores = np.concatenate([np.arange(300.0), [296.5, 1.0]])
    labels = np.concatenate([np.zeros(300, bool), [T, T]])
    assert tar_at_far(scores, labels, 0.01) == pytest.approx(0.5)
    assert tar_at_far(scores, labels, 0.0099) == 0.0


def test_bootstrap_is_deterministic_and_takes_whole_clusters():
    clusters = np.array(["a", "a", "b", "b", "b", "c"])
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])

    def statistic(indices: np.ndarray) -> float:
        counts = np.bincount(indices, minlength=6)
        assert counts[0] == counts[1] and counts[2] == counts[3] == counts[4]
        assert len(np.unique(clusters[indices])) <= 3
        return float(values[indices].mean())

    first = bootstrap_ci(statistic, clusters, n_boot=50, seed=3)
    assert bootstrap_ci(statistic, clusters, n_boot=50, seed=3) == first
    assert bootstrap_ci(statistic, clusters, n_boot=50, seed=4) != first


def test_bootstrap_interval_covers_estimate_and_narrows_with_more_clusters():
    rng = np.random.default_rng(0)
    widths = []
    for n_clusters in (20, 500):
        clusters = np.repeat(np.arange(n_clusters), 3)
        values = rng.normal(size=n_clusters)[clusters] + rng.normal(size=clusters.size)
        low, high = bootstrap_ci(lambda i, v=values: float(v[i].mean()), clusters, n_boot=300)
        assert low < values.mean() < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 2


def test_summary_keys_and_point_estimates():
    scores, labels, folds, clusters = random_pairs(300, 2)
    summary = verification_summary(scores, labels, folds, clusters, n_boot=100)
    assert set(summary) == {
        "acc_mean",
        "acc_std",
        "auc",
        "eer",
        "tar_far1e-3",
        "tar_far1e-2",
        "acc_ci_low",
        "acc_ci_high",
        "auc_ci_low",
        "auc_ci_high",
        "n_pairs",
        "n_impostor",
    }
    accuracy = kfold_accuracy(scores, labels, folds)
    assert summary["acc_mean"] == accuracy.mean and summary["acc_std"] == accuracy.std
    assert summary["auc"] == roc_auc(scores, labels)
    assert summary["tar_far1e-2"] == tar_at_far(scores, labels, 1e-2)
    assert summary["n_pairs"] == 300
    assert summary["n_impostor"] == int((~labels.astype(bool)).sum())
    assert summary["acc_ci_low"] < summary["acc_mean"] < summary["acc_ci_high"]
    assert summary["auc_ci_low"] < summary["auc"] < summary["auc_ci_high"]


def test_summary_intervals_equal_generic_bootstrap_of_the_same_statistics():
    scores, labels, folds, clusters = random_pairs(200, 3, n_clusters=40)
    summary = verification_summary(scores, labels, folds, clusters, n_boot=60, seed=7)

    def accuracy(i: np.ndarray) -> float:
        return kfold_accuracy(scores[i], labels[i], folds[i]).mean

    def auc(i: np.ndarray) -> float:
        return roc_auc(scores[i], labels[i])

    low, high = bootstrap_ci(accuracy, clusters, n_boot=60, seed=7)
    assert (summary["acc_ci_low"], summary["acc_ci_high"]) == pytest.approx((low, high), abs=1e-12)
    low, high = bootstrap_ci(auc, clusters, n_boot=60, seed=7)
    assert (summary["auc_ci_low"], summary["auc_ci_high"]) == pytest.approx((low, high), abs=1e-12)


def test_summary_survives_resamples_that_miss_whole_folds():
    # One identity per fold: most resamples lack some folds, a few keep only one.
    scores, labels, _, _ = random_pairs(120, 4)
    folds = np.arange(120) % 3
    summary = verification_summary(scores, labels, folds, folds, n_boot=200)
    assert math.isfinite(summary["acc_ci_low"]) and summary["acc_ci_low"] <= summary["acc_ci_high"]


def test_nan_scores_are_rejected_with_a_count():
    scores = np.array([0.1, np.nan, 0.3, np.nan])
    labels = np.array([T, F, T, F])
    with pytest.raises(M2FError, match="2 of 4 pair scores are NaN"):
        kfold_accuracy(scores, labels, np.array([0, 0, 1, 1]))


def test_bad_inputs_raise():
    scores = np.array([0.1, 0.2, 0.3, 0.4])
    with pytest.raises(M2FError, match="at least 2 folds"):
        kfold_accuracy(scores, np.array([T, F, T, F]), np.zeros(4, int))
    with pytest.raises(M2FError, match="one value per pair"):
        kfold_accuracy(scores, np.array([T, F, T]), np.array([0, 0, 1, 1]))
    with pytest.raises(M2FError, match="labels must be bool"):
        roc_auc(scores, np.array([0, 1, 2, 1]))
    with pytest.raises(M2FError, match="far must be"):
        tar_at_far(scores, np.array([T, F, T, F]), 0.0)


def test_all_same_labels():
    scores = np.array([0.1, 0.2, 0.3, 0.4])
    labels = np.ones(4, dtype=int)  # 0/1 integers are accepted as labels
    result = kfold_accuracy(scores, labels, np.array([0, 0, 1, 1]))
    assert result.per_fold == [1.0, 1.0] and result.thresholds == [-np.inf, -np.inf]
    for statistic in (roc_auc, eer):
        with pytest.raises(M2FError, match="both same-person and different-person"):
            statistic(scores, labels)
