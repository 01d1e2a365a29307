"""HTML report and summary CSV, on a small synthetic evaluation folder."""

from __future__ import annotations

import base64
import copy
import io
import itertools
import re

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from m2f_bench._io import write_png
from m2f_bench.metrics.verification import verification_summary
from m2f_bench.reporting import SUMMARY_COLUMNS, render_report, write_summary_csv

EVIL = "<script>alert(1)</script>"
MASK_TYPES = ("surgical", "cloth", "n95")
BINS = (0.0, 0.25, 0.3, 1.0)
RECOGNIZERS = ("arcface", "dlib")
SCENARIOS = (
    "clean-clean",
    "masked-clean",
    "inpainted-clean",
    "masked-masked",
    "inpainted-inpainted",
)


def _face(rng: np.random.Generator, size: int) -> np.ndarray:
    """A cartoon face: skin ellipse, eyes, brows, nose and mouth on a flat background."""
    s = size / 64
    img = np.full((size, size, 3), rng.integers(150, 230, 3), np.uint8)
    skin = tuple(int(v) for v in rng.integers([170, 120, 90], [240, 190, 160]))
    cv2.ellipse(img, (size // 2, int(34 * s)), (int(20 * s), int(26 * s)), 0, 0, 360, skin, -1)
    for x in (24, 40):
        cv2.circle(img, (int(x * s), int(28 * s)), max(1, int(3 * s)), (40, 30, 30), -1)
        cv2.line(
            img,
            (int((x - 4) * s), int(22 * s)),
            (int((x + 4) * s), int(22 * s)),
            (70, 50, 40),
            max(1, int(s)),
        )
    cv2.line(
        img, (size // 2, int(32 * s)), (size // 2, int(40 * s)), (150, 100, 80), max(1, int(s))
    )
    cv2.ellipse(
        img,
        (size // 2, int(47 * s)),
        (int(7 * s), int(3 * s)),
        0,
        0,
        180,
        (160, 60, 60),
        max(1, int(2 * s)),
    )
    return img


def _hole(size: int, coverage: float) -> np.ndarray:
    top = int(size * (1 - coverage * 1.6))
    hole = np.zeros((size, size), bool)
    hole[max(top, size // 3) :, size // 8 : size - size // 8] = True
    return hole


def _ci(values: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    boots = [values[rng.integers(0, values.size, values.size)].mean() for _ in range(200)]
    return tuple(float(v) for v in np.percentile(boots, [2.5, 97.5]))


def make_evaluation(
    root,
    *,
    inpainters=("telea", "lama"),
    recognizers=RECOGNIZERS,
    failing: str | None = "broken",
    n_identities: int = 12,
    with_pairs: bool = True,
    size: int = 64,
):
    """Write a synthetic evaluation folder; returns (results, per_image, pair_scores)."""
    rng = np.random.default_rng(0)
    quality = {
        name: 0.5 + 0.4 * i / max(1, len(inpainters) - 1) for i, name in enumerate(inpainters)
    }
    images = []
    for ident in range(n_identities):
        for k in range(2):
            image_id = f"person{ident:02d}_{k + 1:04d}"
            mask_type = MASK_TYPES[(ident + k) % len(MASK_TYPES)]
            coverage = float(rng.uniform(0.2, 0.4))
            crop = _face(rng, size)
            hole = _hole(size, coverage)
            masked = crop.copy()
            masked[hole] = (70, 120, 200) if mask_type == "surgical" else (90, 90, 90)
            write_png(root / f"prepared/crops/{image_id}.png", crop)
            write_png(root / f"prepared/masked/{mask_type}/{image_id}.png", masked)
            for name, q in quality.items():
                blurred = cv2.GaussianBlur(crop, (0, 0), 6 * (1.1 - q) * size / 64)
                out = masked.copy()
                out[hole] = blurred[hole]
                write_png(root / f"inpainted/{name}/{image_id}.png", out)
            images.append((image_id, f"person{ident:02d}", ident % 4 + 1, mask_type, coverage))

    rows = []
    labels = [f"{lo:.2f}–{hi:.2f}" for lo, hi in itertools.pairwise(BINS)]
    for image_id, identity, fold, mask_type, coverage in images:
        coverage_bin = labels[np.searchsorted(BINS, coverage, side="right") - 1]
        base = dict(
            image_id=image_id,
            identity=identity,
            fold=fold,
            mask_type=mask_type,
            coverage=coverage,
            coverage_bin=coverage_bin,
        )
        for name, q in quality.items():
            row = {
                **base,
                "inpainter": name,
                "status": "ok",
                "error": None,
                "psnr": 22 + 8 * q + rng.normal(0, 1.5) - 10 * (coverage - 0.3),
                "ssim": 0.7 + 0.2 * q + rng.normal(0, 0.03),
                "psnr_hole": 14 + 8 * q + rng.normal(0, 1.5),
                "ssim_hole": 0.4 + 0.3 * q + rng.normal(0, 0.05),
                "l1_hole": 0.12 - 0.08 * q + abs(rng.normal(0, 0.01)),
            }
            for rec in recognizers:
                row[f"id_sim.{rec}"] = float(np.clip(0.3 + 0.6 * q + rng.normal(0, 0.08), -1, 1))
            rows.append(row)
        if failing:
            rows.append(
                {
                    **base,
                    "inpainter": failing,
                    "status": "error",
                    "error": "CUDA out of memory <oops>",
                }
            )
    per_image = pd.DataFrame(rows)
    per_image.loc[0, "psnr"] = np.inf  # an identical crop

    separation = {"clean-clean": 3.0, "masked-clean": 0.8, "masked-masked": 1.0}
    separation.update({n: 0.9 + 2 * q for n, q in quality.items()})
    pair_rows = []
    if with_pairs:
        ids = [img[0] for img in images]
        for p in range(48):
            same = p % 2 == 0
            i = int(rng.integers(0, n_identities))
            j = i if same else int((i + rng.integers(1, n_identities)) % n_identities)
            a, b = ids[2 * i], ids[2 * j + (1 if same else 0)]
            for rec in recognizers:
                for scenario in SCENARIOS:
                    names = [""] if "inpainted" not in scenario else list(quality)
                    for name in names:
                        d = separation[name or scenario] * (0.8 if scenario.endswith("ted") else 1)
                        score = float(np.tanh(0.3 * (rng.normal(0, 1) + (d if same else 0))))
                        pair_rows.append(
                            dict(
                                recognizer=rec,
                                scenario=scenario,
                                inpainter=name,
                                fold=p % 4 + 1,
                                a=a,
                                b=b,
                                identity_a=a[:8],
                                same=same,
                                score=score,
                            )
                        )
    pair_scores = pd.DataFrame(
        pair_rows,
        columns=[
            "recognizer",
            "scenario",
            "inpainter",
            "fold",
            "a",
            "b",
            "identity_a",
            "same",
            "score",
        ],
    )

    verification = []
    for (rec, scenario, name), sub in pair_scores.groupby(
        ["recognizer", "scenario", "inpainter"], sort=False
    ):
        stats = verification_summary(
            sub["score"].to_numpy(),
            sub["same"].to_numpy(),
            sub["fold"].to_numpy(),
            sub["identity_a"].to_numpy(),
            n_boot=50,
        )
        verification.append(
            {"recognizer": rec, "scenario": scenario, "inpainter": name or None, **stats}
        )
    ver = {(r["recognizer"], r["scenario"], r["inpainter"]): r for r in verification}

    ok = per_image[per_image["status"] == "ok"]
    metrics = ("psnr", "ssim", "psnr_hole", "ssim_hole", "l1_hole")
    pixel, identity, summary = [], [], []
    for name in quality:
        sub = ok[ok["inpainter"] == name]
        stats = {}
        for metric in metrics:
            values = sub[metric].to_numpy(float)
            values = values[np.isfinite(values)]
            low, high = _ci(values, rng)
            stats[metric] = (float(values.mean()), low, high)
            pixel.append(
                dict(
                    inpainter=name,
                    metric=metric,
                    mean=stats[metric][0],
                    std=float(values.std()),
                    n=int(values.size),
                    ci_low=low,
                    ci_high=high,
                )
            )
        for rec in recognizers or [None]:
            row = {
                "inpainter": name,
                "recognizer": rec,
                "n_images": len(sub),
                "n_pairs": 48 if with_pairs and rec else 0,
                "seconds": 1.5 + 10 * quality[name],
            }
            for metric in metrics:
                row[metric] = stats[metric][0]
            for metric in ("psnr", "ssim"):
                row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = stats[metric][1:]
            row["id_sim"] = None
            if rec:
                values = sub[f"id_sim.{rec}"].to_numpy(float)
                low, high = _ci(values, rng)
                row["id_sim"], row["id_sim_ci_low"], row["id_sim_ci_high"] = (
                    float(values.mean()),
                    low,
                    high,
                )
                identity.append(
                    dict(
                        inpainter=name,
                        recognizer=rec,
                        mean=row["id_sim"],
                        std=float(values.std()),
                        n=values.size,
                        ci_low=low,
                        ci_high=high,
                    )
                )
            for scenario in SCENARIOS:
                key = (rec, scenario, name if "inpainted" in scenario else None)
                row[f"acc_{scenario.replace('-', '_')}"] = ver.get(key, {}).get("acc_mean")
            v = ver.get((rec, "inpainted-clean", name), {})
            row["auc_inpainted_clean"] = v.get("auc")
            row["tar_far1e-3_inpainted_clean"] = v.get("tar_far1e-3")
            row["acc_inpainted_clean_ci_low"] = v.get("acc_ci_low")
            row["acc_inpainted_clean_ci_high"] = v.get("acc_ci_high")
            summary.append(row)

    def breakdown(key):
        group = ok.groupby(["inpainter", key], sort=False)
        table = group[list(metrics) + [f"id_sim.{r}" for r in recognizers]].mean()
        table = table.replace([np.inf], np.nan).reset_index()
        table.insert(2, "n", group.size().to_numpy())
        return table.to_dict("records")

    by_mask = breakdown("mask_type")
    # A fresh recompute: infinite PSNR is left out of the per-bin means too.
    for row in by_mask:
        sub = ok[(ok["inpainter"] == row["inpainter"]) & (ok["mask_type"] == row["mask_type"])]
        row["psnr"] = float(sub["psnr"][np.isfinite(sub["psnr"])].mean())

    all_inpainters = [*quality, *([failing] if failing else [])]
    results = {
        "protocol": {
            "version": 1,
            "name": "synthetic",
            "description": "Synthetic faces for tests.",
            "dataset": {"name": "synthetic", "split": "test", "root": None},
            "faces": {"size": size, "detector": "auto"},
            "masks": {"types": list(MASK_TYPES), "seed": 0},
            "inpainters": [{"type": n} for n in all_inpainters],
            "recognizers": [{"type": r} for r in recognizers],
            "metrics": list(metrics),
            "verification": {
                "scenarios": list(SCENARIOS),
                "fars": [1e-3, 1e-2],
                "bootstrap": 50,
                "seed": 0,
            }
            if with_pairs
            else None,
            "report": {"title": None, "samples": 4, "coverage_bins": list(BINS)},
        },
        "m2f_bench_version": "0.1.0",
        "git_commit": "0123456789abcdef0123456789abcdef01234567",
        "environment": {
            "python": "3.11.2",
            "platform": "Linux-x86_64",
            "cpu": "2 cores",
            "packages": {"numpy": np.__version__, "pandas": pd.__version__},
        },
        "started": "2025-01-01T10:00:00+00:00",
        "finished": "2025-01-01T10:03:12+00:00",
        "timings": {
            "prepare": 3.2,
            "inpaint": {n: 1.5 + 10 * q for n, q in quality.items()},
            "embed": {r: 4.0 for r in recognizers},
            "metrics": 1.1,
            "verification": 2.5,
            "total": 192.0,
        },
        "dataset": {
            "name": "synthetic",
            "root": str(root),
            "split": "test",
            "n_images": len(images),
            "n_pairs": 48 if with_pairs else 0,
            "n_failed_images": 0,
            "n_dropped_pairs": 0,
        },
        "metrics": {
            **{
                m: {"higher_is_better": m != "l1_hole", "description": f"{m} definition."}
                for m in metrics
            },
            "id_sim": {"higher_is_better": True, "description": "cosine similarity."},
        },
        "recognizers": {r: {"key": r, "config": {}} for r in recognizers},
        "inpainters": {
            **{
                n: {
                    "spec": {"type": n},
                    "status": "ok",
                    "error": None,
                    "seconds": 1.5 + 10 * q,
                    "images_per_second": len(images) / (1.5 + 10 * q),
                }
                for n, q in quality.items()
            },
            **(
                {
                    failing: {
                        "spec": {"type": failing},
                        "status": "error",
                        "error": "CUDA out of memory <oops>",
                        "seconds": 0.2,
                        "images_per_second": None,
                    }
                }
                if failing
                else {}
            ),
        },
        "method": {
            "alignment": "5-point similarity transform.",
            "verification protocol": "10-fold cross-validated threshold, LFW style.",
        },
        "paths": {
            "crop": "prepared/crops/{image_id}.png",
            "masked": "prepared/masked/{mask_type}/{image_id}.png",
            "hole": "prepared/holes/{mask_type}/{image_id}.png",
            "inpainted": "inpainted/{inpainter}/{image_id}.png",
        },
        "samples": [{"image_id": img[0], "mask_type": img[3]} for img in images[:4]],
        "summary": summary,
        "verification": verification,
        "pixel": pixel,
        "identity": identity,
        "by_mask_type": by_mask,
        "by_coverage_bin": breakdown("coverage_bin"),
    }
    return results, per_image, pair_scores


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    results, per_image, pair_scores = make_evaluation(root)
    # One large original, to check that sample faces are downscaled.
    big = cv2.resize(cv2.imread(str(root / "prepared/crops/person00_0001.png")), (256, 256))
    write_png(root / "prepared/crops/person00_0001.png", big[:, :, ::-1])
    path = render_report(root, results, per_image, pair_scores)
    return root, results, path.read_text(encoding="utf-8")


def _images(html: str) -> list[str]:
    return re.findall(r"<img\b[^>]*\bsrc=\"([^\"]*)\"", html)


def test_report_is_one_self_contained_file(evaluation):
    root, _, html = evaluation
    assert (root / "report.html").is_file()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html)
    assert "<script" not in html.lower()
    assert "<link" not in html.lower()
    assert "@import" not in html and "url(" not in html
    assert len(re.findall(r"<img\b", html)) == len(_images(html)) > 0
    assert all(src.startswith("data:image/png;base64,") for src in _images(html))


def test_report_embeds_figures_and_downscaled_faces(evaluation):
    _, _, html = evaluation
    sizes = []
    for src in _images(html):
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        sizes.append(image.size)
    faces = [s for s in sizes if s in ((64, 64), (128, 128))]
    # 4 samples × (masked + 2 inpainters + original): the failed inpainter has no column.
    assert len(faces) == 4 * 4
    assert sizes.count((128, 128)) == 1  # the 256-px original
    assert len(sizes) - len(faces) == 5  # every figure has data
    assert 'class="placeholder"' not in html and 'class="note"' not in html
    header = re.search(r'<table class="samples">.*?</thead>', html, re.S).group(0)
    assert re.findall(r"<th>([^<]+)</th>", header) == ["masked input", "telea", "lama", "original"]


def test_report_names_every_inpainter_and_formats_numbers(evaluation):
    _, results, html = evaluation
    for name in ("telea", "lama", "broken", "arcface", "dlib"):
        assert f">{name}<" in html
    row = results["summary"][0]
    assert f"{row['psnr']:.2f}" in html
    assert f"{row['ssim']:.3f}" in html
    assert f"{row['l1_hole']:.4f}" in html
    assert f"{row['psnr_ci_low']:.2f}–{row['psnr_ci_high']:.2f}" in html
    assert f"{row['acc_inpainted_clean'] * 100:.2f}" in html
    assert "↑" in html and "↓" in html


def test_accuracy_shows_percent_std_and_interval(tmp_path):
    results, per_image, pair_scores = make_evaluation(tmp_path, recognizers=("arcface",))
    row = results["summary"][0]
    row.update(
        acc_inpainted_clean=0.97834,
        acc_inpainted_clean_ci_low=0.969,
        acc_inpainted_clean_ci_high=0.9861,
    )
    for ver in results["verification"]:
        if ver["scenario"] == "inpainted-clean" and ver["inpainter"] == row["inpainter"]:
            ver["acc_std"] = 0.00617
    html = render_report(tmp_path, results, per_image, pair_scores).read_text()
    cell = re.search(r"<td[^>]*>97\.83 .*?</td>", html)
    assert cell is not None
    assert "± 0.62" in cell.group(0) and "96.90–98.61" in cell.group(0)


def test_best_value_is_highlighted_per_direction(evaluation):
    _, results, html = evaluation
    best = {"psnr": max, "l1_hole": min}
    for metric, pick in best.items():
        values = {r["inpainter"]: r[metric] for r in results["summary"]}
        digits = 2 if metric == "psnr" else 4
        winner = f"{pick(values.values()):.{digits}f}"
        loser = f"{(min if pick is max else max)(values.values()):.{digits}f}"
        assert re.search(rf'<td class="num best"[^>]*>{re.escape(winner)}', html)
        assert not re.search(rf'<td class="num best"[^>]*>{re.escape(loser)}', html)


def test_failed_inpainter_gets_an_error_row(evaluation):
    _, _, html = evaluation
    error_row = re.search(r'<tr class="error">.*?</tr>', html, re.S)
    assert error_row is not None
    assert "broken failed" in error_row.group(0)
    assert "CUDA out of memory &lt;oops&gt;" in error_row.group(0)
    assert 'role="alert"' in html


def test_user_text_is_escaped(tmp_path):
    results, per_image, pair_scores = make_evaluation(
        tmp_path, inpainters=("telea", EVIL), failing=None, recognizers=("arcface",)
    )
    results["protocol"]["description"] = '<img src="https://evil.example/x.png">'
    results["inpainters"]["telea"].update(status="error", error="<b>bad</b>")
    html = render_report(tmp_path, results, per_image, pair_scores).read_text()
    assert EVIL not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>bad</b>" not in html and "&lt;b&gt;bad&lt;/b&gt;" in html
    assert "https://evil.example" not in re.findall(r"<img\b[^>]*>", html)[0]
    assert all(src.startswith("data:") for src in _images(html))


def test_no_pairs_and_no_recognizers(tmp_path):
    results, per_image, pair_scores = make_evaluation(
        tmp_path, recognizers=(), with_pairs=False, failing=None
    )
    assert pair_scores.empty and not results["verification"] and not results["identity"]
    html = render_report(tmp_path, results, per_image, pair_scores).read_text()
    assert "no ROC curves" in html
    assert "No recognizer scored identity similarity" in html
    assert "accuracy" not in re.search(r"<thead>.*?</thead>", html, re.S).group(0)
    assert 'id="verification"' not in html
    assert f"{results['summary'][0]['psnr']:.2f}" in html


def test_missing_values_and_failed_images_render(evaluation, tmp_path):
    results = copy.deepcopy(evaluation[1])
    for row in results["by_mask_type"]:
        row["psnr"], row["ssim"] = None, float("nan")
    for row in results["summary"]:
        row["auc_inpainted_clean"] = None
    per_image, pair_scores = make_evaluation(tmp_path)[1:]
    per_image = per_image[per_image["inpainter"] != "lama"].copy()
    telea = per_image.index[per_image["inpainter"] == "telea"]
    per_image.loc[telea[1], ["status", "error"]] = ["error", "no face <found>"]
    per_image["id_sim.dlib"] = np.nan
    pair_scores = pair_scores[pair_scores["scenario"] != "clean-clean"].copy()
    pair_scores.loc[pair_scores.index[:5], "score"] = np.nan
    pair_scores["inpainter"] = pair_scores["inpainter"].replace("", np.nan)
    html = render_report(tmp_path, results, per_image, pair_scores).read_text()
    warning = re.search(r'<tr class="warning">.*?</tr>', html, re.S).group(0)
    assert "telea" in warning and "1 of 24 images failed: no face &lt;found&gt;" in warning
    assert "AUC" not in re.search(r"<thead>.*?</thead>", html, re.S).group(0)
    assert 'class="note"' not in html  # every figure still has some data


def test_empty_results_still_render(tmp_path):
    html = render_report(tmp_path, {}, pd.DataFrame(), pd.DataFrame()).read_text()
    assert "No summary rows" in html
    assert html.count('class="note"') == 7  # summary, five figures and the samples


def test_second_render_is_byte_identical(evaluation, tmp_path):
    root, results, html = evaluation
    per_image, pair_scores = make_evaluation(tmp_path)[1:]
    again = render_report(root, results, per_image, pair_scores).read_text(encoding="utf-8")
    assert again == html


def test_sample_paths_cannot_leave_the_evaluation_folder(tmp_path):
    outside = tmp_path / "secret.png"
    write_png(outside, np.zeros((8, 8, 3), np.uint8))
    root = tmp_path / "eval"
    results, per_image, pair_scores = make_evaluation(root, failing=None)
    results["paths"]["crop"] = "../secret.png"
    results["paths"]["masked"] = "{image_id.__class__}.png"
    html = render_report(root, results, per_image, pair_scores).read_text()
    sizes = [
        Image.open(io.BytesIO(base64.b64decode(s.split(",", 1)[1]))).size for s in _images(html)
    ]
    assert (8, 8) not in sizes
    assert html.count('class="placeholder"') == 2 * 4  # masked and original of each sample


def test_summary_csv_columns_in_order(tmp_path):
    results, *_ = make_evaluation(tmp_path)
    path = write_summary_csv(tmp_path, results)
    frame = pd.read_csv(path)
    assert tuple(frame.columns[: len(SUMMARY_COLUMNS)]) == SUMMARY_COLUMNS
    assert "acc_inpainted_clean_ci_low" in frame.columns[len(SUMMARY_COLUMNS) :]
    assert len(frame) == len(results["summary"])
    assert frame["psnr"].iloc[0] == pytest.approx(results["summary"][0]["psnr"])


def test_summary_csv_without_rows_has_the_header(tmp_path):
    path = write_summary_csv(tmp_path, {"summary": []})
    assert path.read_text().strip() == ",".join(SUMMARY_COLUMNS)
