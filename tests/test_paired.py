"""Paired identity-bootstrap differences between two conditions on the same pairs."""

from __future__ import annotations

import numpy as np
import pytest

from m2f_bench.metrics import verification as V


def _pairs(n: int = 600, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2 == 0
    scores = np.where(labels, rng.normal(0.6, 0.15, n), rng.normal(0.2, 0.15, n))
    folds = np.arange(n) % 10
    clusters = rng.integers(0, n // 3, n)
    return scores, labels, folds, clusters


def test_resampled_statistics_with_unit_weights_equal_the_plain_metrics():
    scores, labels, folds, _ = _pairs()
    # One "cluster" per pair, each drawn once: the resample is the data itself.
    members = np.arange(scores.size)
    counts = np.ones((1, scores.size))
    fars = (1e-2, 0.05, 0.2)
    boot = V._resampled_statistics(scores, labels, folds, members, counts, fars)
    assert boot["acc"][0] == pytest.approx(V.kfold_accuracy(scores, labels, folds).mean)
    assert boot["auc"][0] == pytest.approx(V.roc_auc(scores, labels))
    for far in fars:
        key = V._far_key(far)
        assert boot[key][0] == pytest.approx(V.tar_at_far(scores, labels, far)), key


def test_identical_conditions_differ_by_exactly_zero():
    scores, labels, folds, clusters = _pairs()
    d = V.paired_difference(scores, scores, labels, folds, clusters, n_boot=200)
    for key in ("d_acc", "d_auc", "d_tar_far1e-2"):
        assert d[key] == 0 and d[f"{key}_ci_low"] == 0 and d[f"{key}_ci_high"] == 0


def test_a_small_consistent_gain_is_resolved_by_the_paired_interval():
    scores, labels, folds, clusters = _pairs()
    rng = np.random.default_rng(1)
    # The condition separates every pair a little better than the baseline.
    better = scores + np.where(labels, 0.03, -0.03) + rng.normal(0, 0.005, scores.size)
    d = V.paired_difference(better, scores, labels, folds, clusters, n_boot=300, seed=3)
    assert d["d_auc"] > 0 and d["d_auc_ci_low"] > 0
    assert d["d_acc_ci_low"] <= d["d_acc"] <= d["d_acc_ci_high"]
    # Unpaired, the two AUC intervals overlap: only pairing resolves the gain.
    a = V.verification_summary(better, labels, folds, clusters, n_boot=300, seed=3)
    b = V.verification_summary(scores, labels, folds, clusters, n_boot=300, seed=3)
    assert a["auc_ci_low"] < b["auc_ci_high"]
    assert d["d_auc_ci_high"] - d["d_auc_ci_low"] < (a["auc_ci_high"] - a["auc_ci_low"]) / 2
    # The same seed gives the same interval.
    again = V.paired_difference(better, scores, labels, folds, clusters, n_boot=300, seed=3)
    assert again == d


def test_tar_is_flagged_unreliable_below_ten_over_far_impostors():
    scores, labels, folds, clusters = _pairs()  # 300 impostor pairs
    d = V.paired_difference(scores, scores, labels, folds, clusters, fars=(1e-2, 0.05), n_boot=10)
    assert d["tar_far1e-2_reliable"] is False  # needs 1,000
    assert d["tar_far5e-2_reliable"] is True  # needs 200


def _tables():
    """Two recognizers, masked + one method that helps recognizer A and hurts B."""
    import pandas as pd

    rng = np.random.default_rng(0)
    n_id = 60
    images = [(f"p{i}_{k}", f"p{i}", i % 10) for i in range(n_id) for k in range(2)]
    per_image = []
    for inpainter, shift in (("masked", 0.0), ("fill", 1.0)):
        for image_id, identity, fold in images:
            per_image.append(
                {
                    "image_id": image_id,
                    "identity": identity,
                    "fold": fold,
                    "mask_type": "cloth",
                    "coverage_bin": "0.20–0.25",
                    "inpainter": inpainter,
                    "status": "ok",
                    "psnr": 20 + 3 * shift + rng.normal(0, 0.1),
                    "id_sim.A": 0.5 + 0.1 * shift + rng.normal(0, 0.01),
                    "id_sim.B": 0.5 - 0.1 * shift + rng.normal(0, 0.01),
                }
            )
    pairs = []
    for i in range(n_id):
        for same in (True, False):
            a, b = f"p{i}_0", f"p{i}_1" if same else f"p{(i + 1) % n_id}_0"
            base = rng.normal(0.6 if same else 0.2, 0.15)
            for rec, sign in (("A", 1), ("B", -1)):
                gain = sign * (0.1 if same else -0.1)
                for scenario, inpainter, score in (
                    ("masked-clean", "", base),
                    ("inpainted-clean", "fill", base + gain),
                    ("inpainted-clean", "masked", base),
                ):
                    pairs.append(
                        {
                            "recognizer": rec,
                            "scenario": scenario,
                            "inpainter": inpainter,
                            "fold": i % 10,
                            "a": a,
                            "b": b,
                            "identity_a": f"p{i}",
                            "same": same,
                            "score": score,
                        }
                    )
    results = {
        "protocol": {
            "faces": {"size": 128, "detector": "auto"},
            "masks": {"seed": 0},
            "verification": {"bootstrap": 200, "seed": 0, "fars": [0.01]},
        },
        "inpainters": {"masked": {"status": "ok"}, "fill": {"status": "ok"}},
        "recognizers": {"A": {}, "B": {}},
        "metrics": {"psnr": {}},
    }
    return results, pd.DataFrame(per_image), pd.DataFrame(pairs)


def test_summary_and_report_carry_paired_differences_and_recognizer_disagreement(tmp_path):
    from m2f_bench.evaluation.aggregate import aggregate
    from m2f_bench.reporting.html import _paired_table

    results, per_image, pairs = _tables()
    results |= aggregate(results, per_image, pairs)
    rows = {(r["inpainter"], r["recognizer"]): r for r in results["summary"]}
    a, b = rows[("fill", "A")], rows[("fill", "B")]
    assert a["d_id_sim"] == pytest.approx(0.1, abs=0.01) and a["d_id_sim_ci_low"] > 0
    assert b["d_id_sim"] == pytest.approx(-0.1, abs=0.01) and b["d_id_sim_ci_high"] < 0
    assert a["d_acc_inpainted_clean_ci_low"] > 0 > b["d_acc_inpainted_clean_ci_high"]
    assert "d_id_sim" not in rows[("masked", "A")] or rows[("masked", "A")]["d_id_sim"] is None
    table = _paired_table(results, ["masked", "fill"])
    verdicts = {(r["recognizer"], c["verdict"]) for r in table["rows"] for c in r["cells"][:2]}
    assert {("A", "better"), ("B", "worse")} <= verdicts
    text = " ".join(table["agreement"])
    assert "better than masked with A" in text and "worse than masked with B" in text


def test_a_resample_with_one_kind_of_pair_has_no_tar():
    pos = np.array([[3.0, 2.0, 1.0], [1.0, 1.0, 1.0]])
    neg = np.array([[0.0, 0.0, 0.0], [2.0, 1.0, 0.0]])  # first resample: no impostor
    tar = V._boot_tar(pos, neg, 0.5)
    assert np.isnan(tar[0])
    # Second: accepting scores ≥ u_1 lets in 1 of 3 impostors (≤ floor(0.5·3)); TAR 2/3.
    assert tar[1] == pytest.approx(2 / 3)
