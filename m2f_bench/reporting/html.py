"""The HTML report and summary CSV: views of an evaluation folder's files.

:func:`render_report` turns ``results.json`` and the per-image and per-pair tables into
one self-contained HTML file (figures and sample faces embedded as PNG data URIs, CSS
inline, nothing fetched), deterministic for the same inputs. Every string from the
protocol or results (names, error messages) is user text and goes through Jinja's
autoescaping.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from numbers import Real
from pathlib import Path
from typing import Any

import pandas as pd

from m2f_bench._io import atomic_write_text, read_image
from m2f_bench.errors import M2FError
from m2f_bench.evaluation.schema import PATHS, SUMMARY_COLUMNS
from m2f_bench.reporting import plots

#: Columns of ``summary.csv``, in this order, before any other key of the summary rows.
SCENARIO_LABELS = {
    "clean-clean": "clean ↔ clean",
    "masked-clean": "masked ↔ clean",
    "inpainted-clean": "inpainted ↔ clean",
    "masked-masked": "masked ↔ masked",
    "inpainted-inpainted": "inpainted ↔ inpainted",
}
#: Longest side of the sample faces embedded in the report, in pixels.
THUMB_SIZE = 128


_PIXEL = "pixel fidelity to the clean crop"
_VERIFICATION = "verification, inpainted ↔ clean"


@dataclass(frozen=True)
class _Column:
    """A column of the summary table."""

    key: str
    label: str
    group: str  # header spanning the columns of a group
    digits: int
    higher_is_better: bool = True
    percent: bool = False
    scenario: str | None = None  # verification scenario giving the std / intervals

    @property
    def per_recognizer(self) -> bool:
        return self.group != _PIXEL


def _present(value: Any) -> bool:
    """A number to show: finite, or ±inf (PSNR of an identical crop); not None, NaN, a flag."""
    return isinstance(value, Real) and not isinstance(value, bool) and not math.isnan(value)


def _finite(value: Any) -> bool:
    return _present(value) and math.isfinite(value)


def fmt_number(value: Any, digits: int = 3, percent: bool = False) -> str:
    """A number as the report prints it: fixed digits, ``—`` for missing, ``∞`` for inf."""
    if not _present(value):
        return "—"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value * 100 if percent else value:.{digits}f}"


def _interval(low: Any, high: Any, digits: int, percent: bool = False) -> str | None:
    if not (_finite(low) and _finite(high)):
        return None
    return f"{fmt_number(low, digits, percent)}–{fmt_number(high, digits, percent)}"


def _seconds(value: Any) -> str:
    if not _finite(value):
        return "—"
    if value < 1:
        return f"{value:.2f} s"
    if value < 60:
        return f"{value:.1f} s"
    minutes, secs = divmod(value, 60)
    if minutes < 60:
        return f"{int(minutes)} min {secs:02.0f} s"
    return f"{int(minutes // 60)} h {int(minutes % 60):02d} min"


# --- summary CSV ---------------------------------------------------------------------


def write_summary_csv(out_dir: Path, results: Mapping[str, Any]) -> Path:
    """Write ``summary.csv``: one row per (inpainter, recognizer) from ``results["summary"]``.

    Columns are :data:`SUMMARY_COLUMNS` first, then any other key in order of first
    appearance (the interval bounds); missing values are empty cells.

    Returns:
        The path written, ``out_dir / "summary.csv"``.
    """
    rows = list(results.get("summary") or [])
    extra = [k for k in dict.fromkeys(k for row in rows for k in row) if k not in SUMMARY_COLUMNS]
    frame = pd.DataFrame(rows, columns=[*SUMMARY_COLUMNS, *extra])
    path = Path(out_dir) / "summary.csv"
    atomic_write_text(path, frame.to_csv(index=False, lineterminator="\n"))
    return path


# --- view model ----------------------------------------------------------------------


def _inpainter_order(results: Mapping[str, Any], *tables: pd.DataFrame) -> list[str]:
    """Inpainters as the protocol lists them, then any other name the data mentions."""
    names: dict[str, None] = dict.fromkeys(str(k) for k in results.get("inpainters") or {})
    names.update(dict.fromkeys(str(r["inpainter"]) for r in results.get("summary") or []))
    for table in tables:
        if table is not None and "inpainter" in table:
            names.update(dict.fromkeys(str(v) for v in table["inpainter"].dropna() if v != ""))
    return list(names)


def far_label(far: str | float) -> str:
    """A false accept rate as a percentage: ``1e-3`` → ``0.1 %``."""
    try:
        return f"{float(far) * 100:g} %"
    except ValueError:
        return str(far)


def _summary_columns(metrics: Mapping[str, Any], fars: Sequence[str]) -> list[_Column]:
    def hib(name: str) -> bool:
        return bool((metrics.get(name) or {}).get("higher_is_better", name != "l1_hole"))

    ic, ii = "inpainted-clean", "inpainted-inpainted"
    return [
        _Column("psnr", "PSNR (dB)", _PIXEL, 2, hib("psnr")),
        _Column("ssim", "SSIM", _PIXEL, 3, hib("ssim")),
        _Column("psnr_hole", "PSNR hole (dB)", _PIXEL, 2, hib("psnr_hole")),
        _Column("ssim_hole", "SSIM hole", _PIXEL, 3, hib("ssim_hole")),
        _Column("l1_hole", "L1 hole", _PIXEL, 4, hib("l1_hole")),
        _Column("id_sim", "similarity", "identity", 3, hib("id_sim")),
        _Column("acc_inpainted_clean", "accuracy (%)", _VERIFICATION, 2, percent=True, scenario=ic),
        _Column("auc_inpainted_clean", "AUC", _VERIFICATION, 4, scenario=ic),
        *(
            _Column(
                f"tar_far{far}_inpainted_clean",
                f"TAR (%) at FAR {far_label(far)}",
                _VERIFICATION,
                2,
                percent=True,
            )
            for far in fars
        ),
        _Column(
            "acc_inpainted_inpainted",
            "accuracy (%)",
            "inpainted ↔ inpainted",
            2,
            percent=True,
            scenario=ii,
        ),
    ]


def _header(columns: Sequence[_Column]) -> dict[str, list[dict[str, Any]]]:
    """The two header rows of a run of columns: groups with their span, then the labels."""
    arrow = {True: "↑", False: "↓", None: ""}
    groups: list[dict[str, Any]] = []
    for column in columns:
        if groups and groups[-1]["label"] == column.group:
            groups[-1]["span"] += 1
        else:
            groups.append({"label": column.group, "span": 1})
    labels = [{"label": c.label, "arrow": arrow[c.higher_is_better]} for c in columns]
    return {"groups": groups, "labels": labels}


def _cell(row: Mapping[str, Any], column: _Column, verification: Mapping) -> dict[str, Any]:
    value = row.get(column.key)
    cell: dict[str, Any] = {
        "text": fmt_number(value, column.digits, column.percent),
        "value": value,
        "pm": None,
        "ci": None,
        "best": False,
    }
    ver = verification.get((row.get("recognizer"), column.scenario, row.get("inpainter")), {})
    if column.key.startswith("acc_") and _finite(ver.get("acc_std")):
        cell["pm"] = "± " + fmt_number(ver["acc_std"], column.digits, percent=True)
    low, high = row.get(f"{column.key}_ci_low"), row.get(f"{column.key}_ci_high")
    if not _finite(low) and ver:
        prefix = "acc" if column.key.startswith("acc_") else "auc"
        low, high = ver.get(f"{prefix}_ci_low"), ver.get(f"{prefix}_ci_high")
    cell["ci"] = _interval(low, high, column.digits, column.percent)
    if column.key.startswith("tar_far1e-3") and row.get("tar_far1e-3_reliable") is False:
        cell["ci"] = "unreliable: fewer than 10/FAR impostor pairs"
    return cell


def _mark_best(cells: Iterable[dict[str, Any]], higher_is_better: bool | None) -> None:
    """Flag the best cell(s) of a column; nothing to flag with fewer than two values."""
    cells = [c for c in cells if _present(c["value"])]
    if higher_is_better is None or len(cells) < 2:
        return
    values = [c["value"] for c in cells]
    best = max(values) if higher_is_better else min(values)
    if min(values) == max(values):
        return
    for cell in cells:
        cell["best"] = cell["value"] == best


def _verification_index(results: Mapping[str, Any]) -> dict[tuple, dict[str, Any]]:
    """Verification rows by (recognizer, scenario, inpainter); "" for no inpainter."""
    return {
        (r.get("recognizer"), r.get("scenario"), r.get("inpainter") or ""): r
        for r in results.get("verification") or []
    }


def _failure_notes(per_image: pd.DataFrame) -> dict[str, str]:
    """Per inpainter, a line on how many images failed and the first error."""
    if per_image is None or per_image.empty or "status" not in per_image:
        return {}
    notes = {}
    for name, sub in per_image.groupby(per_image["inpainter"].astype(str), sort=False):
        failed = sub[sub["status"].fillna("ok") != "ok"]
        if len(failed):
            first = failed["error"].dropna().astype(str)
            detail = f": {first.iloc[0]}" if len(first) else ""
            notes[name] = f"{len(failed)} of {len(sub)} images failed{detail}"
    return notes


def _summary_table(
    results: Mapping[str, Any], inpainters: Sequence[str], per_image: pd.DataFrame
) -> dict[str, Any]:
    fars = [
        k[len("tar_far") : -len("_inpainted_clean")]
        for k in dict.fromkeys(k for r in results.get("summary") or [] for k in r)
        if k.startswith("tar_far") and k.endswith("_inpainted_clean")
    ]
    columns = _summary_columns(results.get("metrics") or {}, fars or ["1e-3"])
    rows = list(results.get("summary") or [])
    columns = [c for c in columns if any(_present(r.get(c.key)) for r in rows)]
    pixel = [c for c in columns if not c.per_recognizer]
    per_rec = [c for c in columns if c.per_recognizer]
    show_recognizer = any(r.get("recognizer") for r in rows)
    verification = _verification_index(results)
    info = results.get("inpainters") or {}
    failures = _failure_notes(per_image)
    groups = []
    for name in inpainters:
        mine = [r for r in rows if str(r.get("inpainter")) == name]
        meta = info.get(name) or {}
        seconds = meta.get("seconds", mine[0].get("seconds") if mine else None)
        speed = meta.get("images_per_second")
        error = meta.get("error") if meta.get("status") == "error" else None
        if meta.get("status") == "error" and not error:
            error = "failed (no message recorded)"
        groups.append(
            {
                "inpainter": name,
                "pixel": [_cell(mine[0], c, verification) for c in pixel] if mine else [],
                "rows": [
                    {
                        "recognizer": r.get("recognizer") or "—",
                        "cells": [_cell(r, c, verification) for c in per_rec],
                    }
                    for r in mine
                ],
                "seconds": {
                    "text": _seconds(seconds),
                    "value": seconds,
                    "best": False,
                    "ci": f"{speed:.1f} images/s" if _finite(speed) else None,
                    "pm": None,
                },
                "error": error,
                "warning": failures.get(name) if not error else None,
            }
        )
    for i, column in enumerate(pixel):
        _mark_best((g["pixel"][i] for g in groups if g["pixel"]), column.higher_is_better)
    for i, column in enumerate(per_rec):
        by_recognizer: dict[str, list] = {}
        for group in groups:
            for row in group["rows"]:
                by_recognizer.setdefault(row["recognizer"], []).append(row["cells"][i])
        for cells in by_recognizer.values():
            _mark_best(cells, column.higher_is_better)
    _mark_best((g["seconds"] for g in groups if g["rows"]), higher_is_better=False)
    return {
        "pixel_header": _header(pixel),
        "rec_header": _header(per_rec),
        "show_recognizer": show_recognizer,
        "groups": groups,
        "width": 2 + len(pixel) + len(per_rec) + int(show_recognizer),
    }


#: Paired differences to ``masked`` shown in the report: (summary key, label, digits, %).
_PAIRED = (
    ("d_id_sim", "Δ similarity", 3, False),
    ("d_acc_inpainted_clean", "Δ accuracy (pts)", 2, True),
    ("d_auc_inpainted_clean", "Δ AUC", 4, False),
    ("d_tar_far1e-3_inpainted_clean", "Δ TAR at FAR 10⁻³ (pts)", 2, True),
    ("d_tar_far1e-2_inpainted_clean", "Δ TAR at FAR 10⁻² (pts)", 2, True),
)


def _signed(value: Any, digits: int, percent: bool) -> str:
    text = fmt_number(value, digits, percent)
    return f"+{text}" if _finite(value) and value > 0 else text.replace("-", "−")


def _verdict(row: Mapping[str, Any], key: str) -> str:
    """``better``/``worse`` when the interval excludes 0, else ``unresolved``."""
    low, high = row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high")
    if not (_finite(low) and _finite(high)):
        return ""
    return "better" if low > 0 else "worse" if high < 0 else "unresolved"


def _paired_table(results: Mapping[str, Any], inpainters: Sequence[str]) -> dict[str, Any]:
    """Each method minus ``masked`` per recognizer, and where the recognizers disagree."""
    rows = [
        r
        for r in results.get("summary") or []
        if _present(r.get("d_id_sim")) or _present(r.get("d_acc_inpainted_clean"))
    ]
    keys = [k for k in _PAIRED if any(_present(r.get(k[0])) for r in rows)]
    table = []
    for r in sorted(
        rows,
        key=lambda r: (
            str(r.get("recognizer")),
            inpainters.index(r["inpainter"]) if r["inpainter"] in inpainters else 0,
        ),
    ):
        cells = []
        for key, _, digits, percent in keys:
            value = r.get(key)
            reliable = (
                not key.startswith("d_tar_far1e-3") or r.get("tar_far1e-3_reliable") is not False
            )
            cells.append(
                {
                    "text": _signed(value, digits, percent),
                    "ci": _interval(
                        r.get(f"{key}_ci_low"), r.get(f"{key}_ci_high"), digits, percent
                    ),
                    "verdict": _verdict(r, key) if reliable else "unreliable",
                }
            )
        table.append(
            {"recognizer": r.get("recognizer"), "inpainter": r["inpainter"], "cells": cells}
        )
    return {
        "header": [label for _, label, _, _ in keys],
        "rows": table,
        "agreement": _agreement(rows),
    }


def _agreement(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Sentences on where the recognizers agree and disagree about the methods."""
    recognizers = list(dict.fromkeys(str(r.get("recognizer")) for r in rows))
    if len(recognizers) < 2:
        return []
    sentences = []
    for key, label in (
        ("d_acc_inpainted_clean", "inpainted ↔ clean accuracy"),
        ("d_id_sim", "identity similarity"),
    ):
        best = {}
        for rec in recognizers:
            mine = [r for r in rows if str(r.get("recognizer")) == rec and _finite(r.get(key))]
            if mine:
                best[rec] = max(mine, key=lambda r: r[key])["inpainter"]
        if len(best) > 1:
            if len(set(best.values())) == 1:
                sentences.append(
                    f"On {label} every recognizer ranks {next(iter(best.values()))} first."
                )
            else:
                ranks = "; ".join(f"{rec} ranks {name} first" for rec, name in best.items())
                sentences.append(f"The recognizers disagree on {label}: {ranks}.")
        verdicts: dict[str, dict[str, str]] = {}
        for r in rows:
            verdict = _verdict(r, key)
            if verdict:
                verdicts.setdefault(r["inpainter"], {})[str(r.get("recognizer"))] = verdict
        split = {name: v for name, v in verdicts.items() if len(set(v.values())) > 1}
        for name, v in split.items():
            parts = ", ".join(f"{verdict} than masked with {rec}" for rec, verdict in v.items())
            sentences.append(f"{name} on {label}: {parts}.")
        if not split and any(len(v) > 1 for v in verdicts.values()):
            sentences.append(
                f"On {label} against masked, every recognizer reaches the same verdict "
                "for every method."
            )
    return sentences


def _baselines(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Accuracy without inpainting, per recognizer: the floor and ceiling to compare with."""
    scenarios = ("clean-clean", "masked-clean", "masked-masked")
    out = []
    index = _verification_index(results)
    recognizers = dict.fromkeys(r.get("recognizer") for r in results.get("verification") or [])
    for recognizer in recognizers:
        cells = []
        for scenario in scenarios:
            row = index.get((recognizer, scenario, ""))
            if row is None or not _present(row.get("acc_mean")):
                cells.append(None)
                continue
            cells.append(
                {
                    "text": fmt_number(row["acc_mean"], 2, percent=True),
                    "pm": "± " + fmt_number(row["acc_std"], 2, percent=True)
                    if _finite(row.get("acc_std"))
                    else None,
                    "ci": _interval(row.get("acc_ci_low"), row.get("acc_ci_high"), 2, True),
                    "auc": fmt_number(row.get("auc"), 4),
                }
            )
        if any(cells):
            out.append({"recognizer": recognizer, "cells": cells})
    return out


def _verification_rows(results: Mapping[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    rows = list(results.get("verification") or [])
    tars = [k for k in dict.fromkeys(k for r in rows for k in r) if k.startswith("tar_far")]
    order = {s: i for i, s in enumerate(SCENARIO_LABELS)}
    rows.sort(key=lambda r: (str(r.get("recognizer")), order.get(r.get("scenario"), 99)))
    out = []
    for r in rows:
        out.append(
            {
                "recognizer": r.get("recognizer"),
                "scenario": SCENARIO_LABELS.get(r.get("scenario"), r.get("scenario")),
                "inpainter": r.get("inpainter") or "—",
                "acc": fmt_number(r.get("acc_mean"), 2, True),
                "std": fmt_number(r.get("acc_std"), 2, True),
                "acc_ci": _interval(r.get("acc_ci_low"), r.get("acc_ci_high"), 2, True) or "—",
                "auc": fmt_number(r.get("auc"), 4),
                "auc_ci": _interval(r.get("auc_ci_low"), r.get("auc_ci_high"), 4) or "—",
                "eer": fmt_number(r.get("eer"), 2, True),
                "tars": [fmt_number(r.get(t), 2, True) for t in tars],
                "n_pairs": r.get("n_pairs", "—"),
            }
        )
    return [far_label(t[len("tar_far") :]) for t in tars], out


def _records_table(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Any list of flat records as header + formatted cells (for the detail tables)."""
    if not rows:
        return None
    keys = list(dict.fromkeys(k for r in rows for k in r))

    def text(key: str, value: Any) -> str:
        if isinstance(value, float):
            return fmt_number(value, 2 if "psnr" in key else 4)
        return "—" if value is None else str(value)

    return {"header": keys, "rows": [[text(k, r.get(k)) for k in keys] for r in rows]}


# --- sample faces --------------------------------------------------------------------

_FIELD = re.compile(r"\{(\w+)\}")


def _resolve(out_dir: Path, template: str, **fields: str) -> Path | None:
    """A path template filled in, or None if it would leave the evaluation folder.

    Plain ``{name}`` substitution rather than ``str.format``: templates and names come
    from results files, and format's attribute lookups are not for untrusted input.
    """
    try:
        relative = _FIELD.sub(lambda m: str(fields[m.group(1)]), template)
    except KeyError:
        return None
    root = out_dir.resolve()
    path = (root / relative).resolve()
    return path if path.is_relative_to(root) and path.is_file() else None


def _thumbnail(path: Path | None) -> str | None:
    from PIL import Image

    if path is None:
        return None
    try:
        image = Image.fromarray(read_image(path))
    except M2FError:
        return None
    image.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _input_label(results: Mapping[str, Any], inpainters: Sequence[str]) -> str | None:
    """The inpainter whose output is the masked input itself (``type: masked``), if any."""
    info = results.get("inpainters") or {}
    return next(
        (n for n in inpainters if ((info.get(n) or {}).get("spec") or {}).get("type") == "masked"),
        None,
    )


def _samples(
    out_dir: Path,
    results: Mapping[str, Any],
    inpainters: Sequence[str],
    per_image: pd.DataFrame,
    input_label: str | None = None,
) -> list[dict[str, Any]]:
    paths = {**PATHS, **(results.get("paths") or {})}
    recognizers = [
        c for c in (per_image.columns if per_image is not None else []) if c.startswith("id_sim.")
    ]
    scores: dict[tuple[str, str], Mapping[str, Any]] = {}
    if per_image is not None and not per_image.empty:
        for row in per_image.to_dict("records"):
            scores[(str(row["image_id"]), str(row["inpainter"]))] = row
    out = []
    for sample in results.get("samples") or []:
        image_id, mask_type = str(sample["image_id"]), str(sample.get("mask_type", ""))
        fields = {"image_id": image_id, "mask_type": mask_type}
        cells = []
        first = {"src": _thumbnail(_resolve(out_dir, paths["masked"], **fields)), "lines": []}
        for name in [input_label, *[n for n in inpainters if n != input_label]]:
            if name is None:
                cells.append(first)
                continue
            row = scores.get((image_id, name), {})
            lines = []
            status = row.get("status")
            if isinstance(status, str) and status != "ok":
                error = row.get("error")
                lines.append(("error", "failed", error if isinstance(error, str) else status))
            if _present(row.get("psnr")) or _present(row.get("ssim")):
                psnr, ssim = fmt_number(row.get("psnr"), 1), fmt_number(row.get("ssim"), 3)
                lines.append(("", f"PSNR {psnr} · SSIM {ssim}", None))
            for column in recognizers:
                if _present(row.get(column)):
                    lines.append(("", f"id {fmt_number(row[column], 3)} · {column[7:]}", None))
            if name == input_label:  # the masked baseline is the input: shown once
                cells.append(first | {"lines": lines})
                continue
            src = _thumbnail(_resolve(out_dir, paths["inpainted"], inpainter=name, **fields))
            cells.append({"src": src, "lines": lines})
        cells.append({"src": _thumbnail(_resolve(out_dir, paths["crop"], **fields)), "lines": []})
        out.append({"image_id": image_id, "mask_type": mask_type, "cells": cells})
    return out


# --- text ----------------------------------------------------------------------------


def _join(words: Sequence[str]) -> str:
    words = [str(w) for w in words]
    if len(words) <= 2:
        return " and ".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def _what_was_measured(
    results: Mapping[str, Any], inpainters: Sequence[str], failed: Sequence[str]
) -> list[str]:
    """The 'what was measured' paragraph, as sentences built from the results."""
    protocol = results.get("protocol") or {}
    dataset = results.get("dataset") or {}
    spec = protocol.get("dataset") or {}
    size = (protocol.get("faces") or {}).get("size")
    mask_types = (protocol.get("masks") or {}).get("types")
    n_images = dataset.get("n_images")
    what = f"{n_images} face images" if n_images is not None else "Face images"
    name = dataset.get("name") or spec.get("name") or "the dataset"
    split = dataset["split"] if "split" in dataset else spec.get("split")
    sentences = [
        f"{what} from {name}{f' ({split} split)' if split else ''} were aligned"
        + (f" to {size}×{size} crops" if size else "")
        + " and covered with synthetic face masks"
        + (f" ({_join(mask_types)})" if mask_types else "")
        + f"; {len(inpainters)} inpainter{'s' if len(inpainters) != 1 else ''} "
        + f"({_join(inpainters)}) then filled the masked region"
        + (f" ({_join(failed)} failed)." if failed else ".")
    ]
    names = {"psnr": "PSNR", "ssim": "SSIM", "l1": "L1"}
    metrics = [m for m in results.get("metrics") or {} if m in plots.PIXEL_LABELS]
    whole = [names[m] for m in metrics if not m.endswith("_hole")]
    hole = [names[m[: -len("_hole")]] for m in metrics if m.endswith("_hole")]
    if metrics:
        scopes = [f"{_join(whole)} over the whole crop"] if whole else []
        scopes += [f"{_join(hole)} over the hole only"] if hole else []
        sentences.append(
            f"Each result is compared with the clean crop pixel by pixel: {'; '.join(scopes)}."
        )
    recognizers = list(results.get("recognizers") or {})
    if recognizers:
        sentences.append(
            f"Identity is measured with {_join(recognizers)}: the cosine similarity of the "
            "embeddings of the inpainted and the clean crop."
        )
    n_pairs = dataset.get("n_pairs")
    if results.get("verification") and n_pairs:
        scenarios = dict.fromkeys(r["scenario"] for r in results["verification"])
        sentences.append(
            f"Face verification on {n_pairs} pairs asks whether a recognizer still tells the "
            f"same person from two different people, comparing "
            f"{_join([SCENARIO_LABELS.get(s, s) for s in scenarios])} images."
        )
    if protocol.get("description"):
        sentences.append(str(protocol["description"]).strip())
    return sentences


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            out += _flatten(value, f"{prefix}{key} · ")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def _provenance(results: Mapping[str, Any]) -> dict[str, Any]:
    environment = dict(results.get("environment") or {})
    packages = environment.pop("packages", None) or {}
    return {
        "run": [
            ("m2f-bench version", results.get("m2f_bench_version", "—")),
            ("git commit", results.get("git_commit") or "—"),
            ("started", results.get("started", "—")),
            ("finished", results.get("finished", "—")),
            *((k, v) for k, v in _flatten(environment)),
        ],
        "packages": sorted(packages.items()),
        "timings": [(k, _seconds(v)) for k, v in _flatten(results.get("timings") or {})],
        "dataset": [
            (key.removeprefix("n_").replace("_", " "), value)
            for key, value in _flatten(results.get("dataset") or {})
        ],
    }


def _protocol_yaml(protocol: Mapping[str, Any]) -> str:
    import yaml

    if not protocol:
        return ""
    # JSON round trip: plain types only, so safe_dump never meets a Path or numpy scalar.
    plain = json.loads(json.dumps(protocol, default=str))
    return yaml.safe_dump(plain, sort_keys=False, allow_unicode=True, width=100)


# --- rendering -----------------------------------------------------------------------


@lru_cache(maxsize=1)
def _environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("m2f_bench.reporting", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.globals["scenario_label"] = lambda s: SCENARIO_LABELS.get(s, s)
    return env


def _figures(
    results: Mapping[str, Any],
    inpainters: Sequence[str],
    per_image: pd.DataFrame,
    pair_scores: pd.DataFrame,
) -> list[dict[str, Any]]:
    colors = plots.inpainter_colors(inpainters)
    metrics = results.get("metrics") or {}
    return [
        {
            "id": "fig-metrics",
            "title": "Every metric with its 95 % interval",
            "caption": "Mean per inpainter with its 95 % cluster-bootstrap interval."
            + (
                " Accuracy panels mark the clean ↔ clean (dashed) and masked ↔ clean (dotted) "
                "accuracy of the same recognizer: the ceiling and the floor."
                if results.get("verification")
                else ""
            ),
            "src": plots.metric_intervals(results, inpainters, colors),
            "missing": "No aggregate metrics in this evaluation.",
        },
        {
            "id": "fig-roc",
            "title": "ROC curves",
            "caption": "True accept rate against false accept rate (log scale) for every "
            "verification scenario; grey lines need no inpainter.",
            "src": plots.roc_curves(pair_scores, colors),
            "missing": "No verification pairs were scored in this evaluation, so there are "
            "no ROC curves.",
        },
        {
            "id": "fig-mask-type",
            "title": "By mask type",
            "caption": "Mean of each metric per inpainter and mask type.",
            "src": plots.by_mask_type(results.get("by_mask_type") or [], inpainters, metrics),
            "missing": "No per-mask-type results in this evaluation.",
        },
        {
            "id": "fig-coverage",
            "title": "By hole coverage",
            "caption": "Mean of each metric per inpainter against the fraction of the crop "
            "the hole covers; n is the number of images in the bin.",
            "src": plots.by_coverage(
                results.get("by_coverage_bin") or [], inpainters, colors, metrics
            ),
            "missing": "No per-coverage results in this evaluation.",
        },
        {
            "id": "fig-identity",
            "title": "Identity similarity per image",
            "caption": "Distribution over images of the cosine similarity between the "
            "embeddings of the inpainted and the clean crop; lines mark the quartiles.",
            "src": plots.identity_distributions(per_image, inpainters, colors),
            "missing": "No recognizer scored identity similarity in this evaluation.",
        },
    ]


def render_report(
    out_dir: Path,
    results: Mapping[str, Any],
    per_image: pd.DataFrame,
    pair_scores: pd.DataFrame,
) -> Path:
    """Write ``out_dir/report.html``, one self-contained page, from an evaluation's data.

    Args:
        out_dir: The evaluation folder; sample images are read from it through
            ``results["paths"]``.
        results: The contents of ``results.json``.
        per_image: One row per (image, inpainter), as ``per_image.csv``.
        pair_scores: One row per scored pair, as ``pair_scores.csv``; may be empty.

    Returns:
        The path of the report.
    """
    out_dir = Path(out_dir)
    per_image = per_image if per_image is not None else pd.DataFrame()
    pair_scores = pair_scores if pair_scores is not None else pd.DataFrame()
    protocol = results.get("protocol") or {}
    inpainters = _inpainter_order(results, per_image, pair_scores)
    info = results.get("inpainters") or {}
    failed = {
        name: (info.get(name) or {}).get("error") or "failed (no message recorded)"
        for name in inpainters
        if (info.get(name) or {}).get("status") == "error"
    }
    # A failed inpainter has no images and no numbers: figures and samples leave it out.
    working = [name for name in inpainters if name not in failed]
    verification = protocol.get("verification") or {}
    tar_columns, verification_rows = _verification_rows(results)
    context = {
        "title": (protocol.get("report") or {}).get("title")
        or f"m2f-bench report · {protocol.get('name', 'evaluation')}",
        "protocol_name": protocol.get("name"),
        "dataset": results.get("dataset") or {},
        "finished": results.get("finished"),
        "version": results.get("m2f_bench_version"),
        "commit": (results.get("git_commit") or "")[:12],
        "inpainters": inpainters,
        "recognizers": list(results.get("recognizers") or {}),
        "failed": list(failed.items()),
        "measured": _what_was_measured(results, inpainters, list(failed)),
        "summary": _summary_table(results, inpainters, per_image),
        "baselines": _baselines(results),
        "paired": _paired_table(results, inpainters),
        "tar_columns": tar_columns,
        "verification": verification_rows,
        "figures": _figures(results, working, per_image, pair_scores),
        "sample_header": [
            "masked input",
            *[n for n in working if n != _input_label(results, working)],
            "original",
        ],
        "samples": _samples(out_dir, results, working, per_image, _input_label(results, working)),
        "metrics": [
            {
                "name": name,
                "arrow": {True: "↑", False: "↓"}.get(m.get("higher_is_better"), ""),
                "description": m.get("description", ""),
            }
            for name, m in (results.get("metrics") or {}).items()
        ],
        "method": list((results.get("method") or {}).items()),
        "bootstrap": {
            "resamples": verification.get("bootstrap"),
            "seed": verification.get("seed"),
            "fars": verification.get("fars"),
        },
        "by_mask_type": _records_table(results.get("by_mask_type") or []),
        "by_coverage_bin": _records_table(results.get("by_coverage_bin") or []),
        "protocol_yaml": _protocol_yaml(protocol),
        "provenance": _provenance(results),
    }
    html = _environment().get_template("report.html.j2").render(**context)
    path = out_dir / "report.html"
    atomic_write_text(path, html)
    return path
