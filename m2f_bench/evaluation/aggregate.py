"""Per-item tables → every number a report shows.

Used by ``evaluate`` and by ``report``, which rebuilds the aggregates from the saved
``per_image.csv`` and ``pair_scores.csv`` alone, so both give the same numbers.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from m2f_bench.errors import M2FError
from m2f_bench.evaluation.schema import SUMMARY_COLUMNS

log = logging.getLogger(__name__)


def coverage_bin_labels(edges: Sequence[float]) -> list[str]:
    """``"0.20–0.25"`` style labels for consecutive bin edges."""
    return [f"{a:.2f}–{b:.2f}" for a, b in itertools.pairwise(edges)]


def _finite_mean(values: np.ndarray) -> float | None:
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


def _mean_with_ci(
    values: np.ndarray, identities: np.ndarray, n_boot: int, seed: int
) -> dict[str, Any]:
    """Mean, std and a cluster-bootstrap 95 % interval over identities; non-finite dropped."""
    from m2f_bench.metrics.verification import bootstrap_ci

    keep = np.isfinite(values)
    values, identities = values[keep], identities[keep]
    out: dict[str, Any] = {
        "mean": None,
        "std": None,
        "n": int(values.size),
        "n_dropped": int((~keep).sum()),
        "ci_low": None,
        "ci_high": None,
    }
    if not values.size:
        return out
    out["mean"], out["std"] = float(values.mean()), float(values.std())
    if n_boot and np.unique(identities).size > 1:
        low, high = bootstrap_ci(lambda idx: float(values[idx].mean()), identities, n_boot, seed)
        out["ci_low"], out["ci_high"] = low, high
    return out


def aggregate(
    results: dict[str, Any], per_image: pd.DataFrame, pair_scores: pd.DataFrame
) -> dict[str, Any]:
    """The aggregate sections of ``results.json``.

    Args:
        results: At least ``protocol``, ``inpainters`` and ``recognizers`` (as written by
            the runner).
        per_image: One row per (image, inpainter) with pixel metrics and ``id_sim.<rec>``.
        pair_scores: One row per (recognizer, scenario, inpainter, pair) with its score.

    Returns:
        ``pixel``, ``identity``, ``verification``, ``by_mask_type``, ``by_coverage_bin``,
        ``summary`` and ``method``.
    """
    from m2f_bench.metrics.verification import verification_summary

    protocol = results["protocol"]
    verification_spec = protocol.get("verification") or {}
    n_boot = int(verification_spec.get("bootstrap", 1000))
    seed = int(verification_spec.get("seed", 0))
    fars = tuple(verification_spec.get("fars", (1e-3, 1e-2)))
    recognizers = list(results.get("recognizers", {}))
    # Every pixel metric the run recorded, built-in or plug-in (id_sim is per recognizer).
    pixel_names = [m for m in results.get("metrics", {}) if m in per_image.columns]
    id_columns = {r: f"id_sim.{r}" for r in recognizers if f"id_sim.{r}" in per_image.columns}

    pixel, identity = [], []
    for label, group in per_image.groupby("inpainter", sort=False):
        identities = group["identity"].astype(str).to_numpy()
        for name in pixel_names:
            values = group[name].astype(float).to_numpy()
            pixel.append(
                {"inpainter": label, "metric": name}
                | _mean_with_ci(values, identities, n_boot, seed)
            )
        for rec, column in id_columns.items():
            values = group[column].astype(float).to_numpy()
            identity.append(
                {"inpainter": label, "recognizer": rec}
                | _mean_with_ci(values, identities, n_boot, seed)
            )

    verification, verification_errors = [], []
    for (rec, scenario, label), group in pair_scores.groupby(
        ["recognizer", "scenario", "inpainter"], sort=False, dropna=False
    ):
        label = "" if pd.isna(label) else label
        try:
            stats = verification_summary(
                group["score"].to_numpy(float),
                group["same"].astype(bool).to_numpy(),
                group["fold"].to_numpy(int),
                group["identity_a"].astype(str).to_numpy(),
                fars=fars,
                n_boot=n_boot,
                seed=seed,
            )
        except M2FError as exc:
            # Too few pairs (e.g. one fold, or one kind of pair): say so, keep the rest.
            log.warning("verification %s %s %s: %s", rec, scenario, label, exc)
            verification_errors.append(
                {"recognizer": rec, "scenario": scenario, "inpainter": label, "error": str(exc)}
            )
            continue
        verification.append(
            {"recognizer": rec, "scenario": scenario, "inpainter": label}
            | {k: int(v) if k.startswith("n_") else float(v) for k, v in stats.items()}
        )

    baseline = next(
        (
            label
            for label, state in (results.get("inpainters") or {}).items()
            if (state.get("spec") or {}).get("type") == "masked"
        ),
        BASELINE,
    )
    paired = _paired(per_image, pair_scores, id_columns, fars, n_boot, seed, baseline)
    value_columns = pixel_names + list(id_columns.values())

    def by(column: str) -> list[dict[str, Any]]:
        rows = []
        for (label, key), group in per_image.groupby(["inpainter", column], sort=True):
            row = {"inpainter": label, column: key, "n": len(group)}
            for name in value_columns:
                row[name] = _finite_mean(group[name].astype(float).to_numpy())
            rows.append(row)
        return rows

    return {
        "pixel": pixel,
        "identity": identity,
        "verification": verification,
        "verification_errors": verification_errors,
        "by_mask_type": by("mask_type"),
        "by_coverage_bin": by("coverage_bin"),
        "paired": paired,
        "summary": _summary(results, pixel, identity, verification, per_image, paired),
        "method": method_text(results),
    }


#: The condition every method is compared with, pair for pair and image for image.
BASELINE = "masked"


def _paired(
    per_image: pd.DataFrame,
    pair_scores: pd.DataFrame,
    id_columns: dict[str, str],
    fars: Sequence[float],
    n_boot: int,
    seed: int,
    baseline: str = "masked",
) -> list[dict[str, Any]]:
    """Each method minus ``masked``: verification (inpainted↔clean vs masked↔clean, on the
    same pairs) and id_sim (same images), with paired identity-bootstrap 95 % intervals."""
    from m2f_bench.metrics.verification import paired_difference

    rows: list[dict[str, Any]] = []
    labels = [x for x in per_image["inpainter"].unique() if x != baseline] if len(per_image) else []
    if baseline not in set(per_image.get("inpainter", ())):
        return rows
    base_images = per_image[per_image["inpainter"] == baseline].set_index("image_id")
    key = ["fold", "a", "b"]
    for rec in dict.fromkeys(list(id_columns) + list(pair_scores.get("recognizer", ()))):
        rec_pairs = pair_scores[pair_scores["recognizer"] == rec]
        base_pairs = rec_pairs[rec_pairs["scenario"] == "masked-clean"]
        for label in labels:
            row: dict[str, Any] = {"recognizer": rec, "inpainter": label}
            column = id_columns.get(rec)
            if column is not None:
                mine = per_image[per_image["inpainter"] == label].set_index("image_id")
                both = mine[[column, "identity"]].join(
                    base_images[[column]].add_suffix("_base"), how="inner"
                )
                diff = (both[column] - both[f"{column}_base"]).astype(float).to_numpy()
                stats = _mean_with_ci(diff, both["identity"].astype(str).to_numpy(), n_boot, seed)
                row |= {
                    "d_id_sim": stats["mean"],
                    "d_id_sim_ci_low": stats["ci_low"],
                    "d_id_sim_ci_high": stats["ci_high"],
                }
            inpainted = rec_pairs[
                (rec_pairs["scenario"] == "inpainted-clean") & (rec_pairs["inpainter"] == label)
            ]
            if len(inpainted) and len(base_pairs):
                merged = inpainted.merge(
                    base_pairs, on=key, suffixes=("", "_base"), validate="one_to_one"
                )
                if len(merged) != len(inpainted):
                    log.warning("paired difference %s %s: pairs do not match", rec, label)
                    rows.append(row)
                    continue
                try:
                    diff = paired_difference(
                        merged["score"].to_numpy(float),
                        merged["score_base"].to_numpy(float),
                        merged["same"].astype(bool).to_numpy(),
                        merged["fold"].to_numpy(int),
                        merged["identity_a"].astype(str).to_numpy(),
                        fars=fars,
                        n_boot=n_boot,
                        seed=seed,
                    )
                except M2FError as exc:
                    log.warning("paired difference %s %s: %s", rec, label, exc)
                else:
                    for k, v in diff.items():
                        if k.startswith("d_"):
                            # d_acc_ci_low → d_acc_inpainted_clean_ci_low
                            name, _, tail = k.partition("_ci_")
                            k = f"{name}_inpainted_clean" + (f"_ci_{tail}" if tail else "")
                        row[k] = v
                    row["n_pairs"] = len(merged)
            rows.append(row)
    return rows


def _summary(
    results: dict[str, Any],
    pixel: list[dict],
    identity: list[dict],
    verification: list[dict],
    per_image: pd.DataFrame,
    paired: list[dict] = (),
) -> list[dict[str, Any]]:
    recognizers = list(results.get("recognizers", {})) or [""]
    far_key = "tar_far1e-3"
    rows = []

    def find(rec: str, scenario: str, label: str) -> dict | None:
        return next(
            (
                v
                for v in verification
                if v["recognizer"] == rec and v["scenario"] == scenario and v["inpainter"] == label
            ),
            None,
        )

    for label, state in results["inpainters"].items():
        n_images = int((per_image["inpainter"] == label).sum()) if len(per_image) else 0
        for rec in recognizers:
            row: dict[str, Any] = dict.fromkeys(SUMMARY_COLUMNS)
            row |= {
                "inpainter": label,
                "recognizer": rec,
                "n_images": n_images,
                "status": state.get("status", "ok"),
                "error": state.get("error", ""),
            }
            for p in pixel:
                if p["inpainter"] == label:
                    row[p["metric"]] = p["mean"]
                    if p["metric"] in ("psnr", "ssim"):
                        row[f"{p['metric']}_ci_low"] = p["ci_low"]
                        row[f"{p['metric']}_ci_high"] = p["ci_high"]
            for i in identity:
                if i["inpainter"] == label and i["recognizer"] == rec:
                    row |= {
                        "id_sim": i["mean"],
                        "id_sim_ci_low": i["ci_low"],
                        "id_sim_ci_high": i["ci_high"],
                    }
            for scenario, inpainter_label in (
                ("clean-clean", ""),
                ("masked-clean", ""),
                ("masked-masked", ""),
                ("inpainted-clean", label),
                ("inpainted-inpainted", label),
            ):
                v = find(rec, scenario, inpainter_label)
                if v is None:
                    continue
                key = scenario.replace("-", "_")
                row[f"acc_{key}"] = v["acc_mean"]
                row[f"acc_{key}_std"] = v["acc_std"]
                if scenario == "inpainted-clean":
                    row |= {
                        "n_pairs": v["n_pairs"],
                        "auc_inpainted_clean": v["auc"],
                        "tar_far1e-3_inpainted_clean": v.get(far_key),
                        # Fewer than 10/FAR impostor pairs: a handful of them set the TAR.
                        "tar_far1e-3_reliable": v.get("n_impostor", 0) >= 10 / 1e-3,
                        "acc_inpainted_clean_ci_low": v["acc_ci_low"],
                        "acc_inpainted_clean_ci_high": v["acc_ci_high"],
                    }
                elif row["n_pairs"] is None:
                    row["n_pairs"] = v["n_pairs"]
            for d in paired:
                if d["inpainter"] == label and d["recognizer"] == rec:
                    row |= {k: v for k, v in d.items() if k.startswith("d_")}
            rows.append(row)
    return rows


def _predicted(results: dict[str, Any]) -> list[str]:
    return [
        label
        for label, state in (results.get("inpainters") or {}).items()
        if state.get("hole") == "predicted"
    ]


def method_text(results: dict[str, Any]) -> dict[str, str]:
    """How every number was computed, in sentences, from the protocol's settings."""
    p = results["protocol"]
    size = p["faces"]["size"]
    v = p.get("verification") or {}
    return {
        "alignment": (
            f"Faces are detected ({p['faces']['detector']}: SCRFD-500M with dlib HOG as "
            "fallback), the face nearest the image centre is kept, and a least-squares "
            "similarity (Umeyama 1991) maps its five keypoints onto the ArcFace 112×112 "
            f"template placed inside a {size}×{size} crop covering x∈[−24,136], y∈[−16,144] "
            "of chip coordinates. dlib's 68 landmarks are predicted on the crop."
        ),
        "masks": (
            f"Each image wears one synthetic mask, its type dealt out evenly over "
            f"{', '.join(p['masks'].get('types') or ['all types'])} by a permutation seeded "
            f"with {p['masks']['seed']}; the mask is drawn from the 68 landmarks and its "
            "hole is exactly the set of pixels it changed. Coverage is the hole's share of "
            "the crop."
        ),
        "inpainting": (
            "Every inpainter receives the masked crops and their boolean holes; its output is "
            "composited so that pixels outside the hole are the masked input's."
            + (
                " Inpainters marked hole: predicted ("
                + ", ".join(predicted)
                + ") receive instead the hole a mask segmenter finds in the masked crop, as "
                "on a real photo, and are composited into that hole; their pixel metrics "
                "are still measured on the exact hole, and hole_iou is the intersection over "
                "union of the two holes (1 for the other inpainters)."
                if (predicted := _predicted(results))
                else ""
            )
        ),
        "pixel_metrics": (
            "Pixel metrics compare each inpainted crop with the clean crop of the same face "
            "(uint8 RGB, data range 255); means are over images, with 95 % intervals from "
            f"{v.get('bootstrap', 1000)} bootstrap resamples of identities (seed "
            f"{v.get('seed', 0)}). PSNR of identical crops (infinite) is left out of means."
        ),
        "identity_similarity": (
            "Identity similarity is the cosine of the recognizer's embeddings of the "
            "inpainted crop and of the clean crop of the same image. ArcFace-class models "
            "embed the 112×112 chip warped from the crop by a fixed affine map; the "
            "embedding is the L2-normalised sum of the chip's and its mirror's."
        ),
        "verification": (
            "Verification follows the LFW protocol as insightface evaluates it: a pair's "
            "score is the cosine of its two embeddings; for each fold the accuracy-"
            "maximising threshold is chosen on the other folds and applied to it; accuracy "
            "is the mean ± population std over folds. In scenario X↔Y the first image of "
            "each pair is in condition X and the second in Y. ROC AUC and EER use all pairs; "
            "TAR@FAR is the largest true-accept rate whose false-accept rate on the "
            f"impostor pairs is ≤ FAR ({', '.join(str(f) for f in v.get('fars', []))}). "
            "Intervals: cluster bootstrap over the identity of each pair's first image, "
            "re-running the k-fold procedure on each resample."
        ),
    }
