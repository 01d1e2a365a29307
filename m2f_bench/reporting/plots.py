"""The report's figures, each returned as a PNG data URI, or ``None`` without data.

Figures are drawn on :class:`matplotlib.figure.Figure` objects rather than through
pyplot, so rendering a report leaves no global figure state behind, and are saved
without the software tag so the same inputs give byte-identical PNGs. matplotlib and
seaborn are imported on first use: ``import m2f_bench.reporting`` stays fast.
"""

from __future__ import annotations

import base64
import io
import math
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from numbers import Real
from typing import Any

import numpy as np
import pandas as pd

DPI = 100
#: Plot labels of the pixel metrics, in the order they are shown.
PIXEL_LABELS = {
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "psnr_hole": "PSNR, hole (dB)",
    "ssim_hole": "SSIM, hole",
    "l1_hole": "L1, hole",
}
#: How the scenarios that do not depend on an inpainter are drawn in ROC plots.
_BASELINES = {
    "clean-clean": ("clean ↔ clean", "-", "#222222"),
    "masked-clean": ("masked ↔ clean", "--", "#7a7a7a"),
    "masked-masked": ("masked ↔ masked", ":", "#7a7a7a"),
}
_PER_INPAINTER = {"inpainted-clean": ("↔ clean", "-"), "inpainted-inpainted": ("↔ itself", "--")}


@contextmanager
def _style() -> Iterator[None]:
    import matplotlib

    # Headless by default, but an interactive session that already chose a backend
    # (pyplot imported) keeps it: Figure.savefig needs no pyplot backend at all.
    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import seaborn as sns

    rc = {
        # Names are user text: a "$" must not start mathtext.
        "text.parse_math": False,
        "font.size": 9,
        "axes.titlesize": 10,
        "axes.titleweight": "bold",
        "axes.labelsize": 9,
        "legend.fontsize": 8,
        "svg.hashsalt": "m2f-bench",
    }
    with sns.axes_style("whitegrid"), matplotlib.rc_context(rc):
        yield


def _figure(n_panels: int, ncols: int, panel_w: float, panel_h: float):
    from matplotlib.figure import Figure

    ncols = max(1, min(ncols, n_panels))
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(panel_w * ncols, panel_h * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _data_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None}, facecolor="white")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _short(name: str, limit: int = 26) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _arrow(higher_is_better: bool | None) -> str:
    return "" if higher_is_better is None else (" ↑" if higher_is_better else " ↓")


def _finite(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def inpainter_colors(names: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """One colour per inpainter, the same in every figure of a report."""
    import seaborn as sns

    palette = sns.color_palette("colorblind" if len(names) <= 10 else "husl", len(names))
    return dict(zip(names, palette, strict=True))


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.4g}"


def _interval_panel(ax, title, rows, inpainters, colors, refs=()) -> None:
    """Points with 95 % interval whiskers, one line per inpainter, values written beside."""
    y = np.arange(len(inpainters))
    for i, name in enumerate(inpainters):
        mean, low, high = rows.get(name, (None, None, None))
        if not _finite(mean):
            ax.text(
                0.02,
                i,
                "no data",
                va="center",
                transform=ax.get_yaxis_transform(),
                color="#888888",
                fontsize=8,
            )
            continue
        err = None
        if _finite(low) and _finite(high):
            err = [[max(mean - low, 0.0)], [max(high - mean, 0.0)]]
        ax.errorbar(mean, i, xerr=err, fmt="o", color=colors[name], ms=6, capsize=4, lw=1.6)
        right = high if err is not None else mean
        ax.annotate(
            _fmt(mean),
            (right, i),
            xytext=(5, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
            color="#333333",
        )
    for value, style in refs:
        ax.axvline(value, color="#555555", ls=style, lw=1)
    ax.set_yticks(y, [_short(n) for n in inpainters])
    ax.set_ylim(len(inpainters) - 0.5, -0.5)
    ax.margins(x=0.18)
    ax.set_title(title)
    ax.grid(axis="y", visible=False)


def metric_intervals(
    results: Mapping[str, Any], inpainters: Sequence[str], colors: Mapping[str, Any]
) -> str | None:
    """Every headline metric per inpainter: mean and 95 % bootstrap interval.

    One panel per pixel metric, then identity similarity and inpainted ↔ clean
    verification accuracy per recognizer, the latter with the clean ↔ clean and
    masked ↔ clean accuracies as reference lines.
    """
    metrics = results.get("metrics") or {}
    panels: list[tuple[str, dict, list]] = []
    pixel = pd.DataFrame(results.get("pixel") or [])
    for metric, label in PIXEL_LABELS.items():
        if pixel.empty or metric not in set(pixel["metric"]):
            continue
        sub = pixel[pixel["metric"] == metric]
        rows = {r.inpainter: (r.mean, r.ci_low, r.ci_high) for r in sub.itertuples()}
        hib = (metrics.get(metric) or {}).get("higher_is_better")
        panels.append((label + _arrow(hib), rows, []))
    for recognizer, sub in _group(results.get("identity") or [], "recognizer"):
        rows = {r["inpainter"]: (r["mean"], r["ci_low"], r["ci_high"]) for r in sub}
        panels.append((f"identity similarity · {_short(recognizer)} ↑", rows, []))
    verification = [r for r in results.get("verification") or [] if _finite(r.get("acc_mean"))]
    for recognizer, sub in _group(verification, "recognizer"):
        rows = {
            r["inpainter"]: (
                100 * r["acc_mean"],
                _pct(r.get("acc_ci_low")),
                _pct(r.get("acc_ci_high")),
            )
            for r in sub
            if r["scenario"] == "inpainted-clean"
        }
        if not rows:
            continue
        refs = [
            (100 * r["acc_mean"], style)
            for s, style in (("clean-clean", "--"), ("masked-clean", ":"))
            for r in sub
            if r["scenario"] == s and not r.get("inpainter")
        ]
        panels.append((f"accuracy inpainted ↔ clean (%) · {_short(recognizer)} ↑", rows, refs))
    inpainters = [n for n in inpainters if any(_finite(p[1].get(n, (None,))[0]) for p in panels)]
    if not inpainters:
        return None
    with _style():
        fig, axes = _figure(len(panels), 3, 4.1, 0.6 + 0.42 * len(inpainters))
        for ax, (title, rows, refs) in zip(axes, panels, strict=True):
            _interval_panel(ax, title, rows, inpainters, colors, refs)
        return _data_uri(fig)


def _pct(value: Any) -> float | None:
    return 100 * value if _finite(value) else None


def _group(rows: Sequence[Mapping[str, Any]], key: str) -> list[tuple[Any, list]]:
    """Rows grouped by ``key``, groups in order of first appearance."""
    groups: dict[Any, list] = {}
    for row in rows:
        groups.setdefault(row.get(key), []).append(row)
    return list(groups.items())


def roc_curves(pair_scores: pd.DataFrame, colors: Mapping[str, Any]) -> str | None:
    """ROC curves of every scenario, one panel per recognizer, FAR on a log scale."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    from m2f_bench.metrics.verification import roc_auc, roc_curve

    if pair_scores is None or pair_scores.empty:
        return None
    scores = pair_scores[np.isfinite(pair_scores["score"].astype(float))]
    recognizers = list(dict.fromkeys(scores["recognizer"]))
    curves: dict[str, list] = {}
    for recognizer in recognizers:
        sub = scores[scores["recognizer"] == recognizer]
        inpainter = sub["inpainter"].fillna("").astype(str)
        lines = []
        keys = [(s, "") for s in _BASELINES] + [
            (s, name) for name in colors for s in _PER_INPAINTER
        ]
        for scenario, name in keys:
            pairs = sub[(sub["scenario"] == scenario) & (inpainter == name)]
            labels = pairs["same"].astype(bool).to_numpy()
            if labels.all() or not labels.any():
                continue
            far, tar, _ = roc_curve(pairs["score"].to_numpy(float), labels)
            auc = roc_auc(pairs["score"].to_numpy(float), labels)
            if name:
                label, style = _PER_INPAINTER[scenario]
                label, color = f"{_short(name, 18)} {label}", colors[name]
            else:
                label, style, color = _BASELINES[scenario]
            lines.append((far, tar, f"{label} (AUC {auc:.3f})", style, color, (~labels).sum()))
        if lines:
            curves[recognizer] = lines
    if not curves:
        return None
    with _style():
        fig, axes = _figure(len(curves), 2, 5.6, 4.4)
        for ax, (recognizer, lines) in zip(axes, curves.items(), strict=True):
            floor = 10 ** math.floor(math.log10(1 / max(n for *_, n in lines)))
            for far, tar, label, style, color, _ in lines:
                ax.plot(
                    np.maximum(far, floor),
                    tar,
                    ls=style,
                    color=color,
                    lw=1.5,
                    label=label,
                    drawstyle="steps-post",
                )
            ax.set_xscale("log")
            ax.set_xlim(floor, 1)
            # Unicode powers of ten: mathtext tick labels are off (see _style).
            ax.xaxis.set_major_formatter(FuncFormatter(_power_of_ten))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_ylim(0, 1.01)
            ax.set_xlabel("false accept rate (FAR)")
            ax.set_ylabel("true accept rate (TAR)")
            ax.set_title(f"ROC · {_short(recognizer, 40)}")
            ax.legend(loc="lower right", fontsize=7, frameon=True)
        return _data_uri(fig)


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _power_of_ten(value: float, _position: int) -> str:
    exponent = round(math.log10(value)) if value > 0 else 0
    return "1" if exponent == 0 else "10" + str(exponent).translate(_SUPERSCRIPT)


def _bin_start(label: str) -> float:
    match = re.match(r"\s*([-+]?\d*\.?\d+)", str(label))
    return float(match.group(1)) if match else math.inf


def _group_metrics(frame: pd.DataFrame, metrics: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    """(column, label, higher_is_better) of the metrics a per-group table holds."""
    out = []
    for column, label in PIXEL_LABELS.items():
        if column in frame and frame[column].notna().any():
            hib = (metrics.get(column) or {}).get("higher_is_better", column != "l1_hole")
            out.append((column, label, hib))
    for column in frame.columns:
        if column.startswith("id_sim.") and frame[column].notna().any():
            out.append((column, f"identity similarity · {_short(column[7:])}", True))
    return out


def by_mask_type(
    rows: Sequence[Mapping[str, Any]],
    inpainters: Sequence[str],
    metrics: Mapping[str, Any],
) -> str | None:
    """Heatmaps inpainter × mask type, one per metric, cells annotated with the mean."""
    frame = pd.DataFrame(rows or [])
    if frame.empty or "mask_type" not in frame:
        return None
    panels = _group_metrics(frame, metrics)
    if not panels:
        return None
    import seaborn as sns

    order = [n for n in inpainters if n in set(frame["inpainter"])]
    if not order:
        return None
    mask_types = list(dict.fromkeys(frame["mask_type"]))
    with _style():
        width = 1.5 + 0.6 * len(mask_types)
        ncols = max(1, min(3, int(12.5 // width)))
        fig, axes = _figure(len(panels), ncols, width, 0.9 + 0.4 * len(order))
        for ax, (column, label, hib) in zip(axes, panels, strict=True):
            table = frame.pivot_table(
                index="inpainter", columns="mask_type", values=column, aggfunc="mean", dropna=False
            )
            table = table.reindex(index=order, columns=mask_types)
            table.index = [_short(n, 20) for n in table.index]
            fmt = ".1f" if "psnr" in column else ".3f"
            sns.heatmap(
                table,
                ax=ax,
                annot=True,
                fmt=fmt,
                cbar=False,
                linewidths=0.5,
                cmap="viridis" if hib else "viridis_r",
                annot_kws={"fontsize": 8},
            )
            ax.set_title(label + _arrow(hib))
            ax.set_xlabel("")
            ax.set_ylabel("")
            ax.tick_params(axis="x", rotation=30)
            ax.tick_params(axis="y", rotation=0)
        return _data_uri(fig)


def by_coverage(
    rows: Sequence[Mapping[str, Any]],
    inpainters: Sequence[str],
    colors: Mapping[str, Any],
    metrics: Mapping[str, Any],
) -> str | None:
    """Each metric against the hole's share of the crop, one line per inpainter."""
    frame = pd.DataFrame(rows or [])
    if frame.empty or "coverage_bin" not in frame:
        return None
    panels = _group_metrics(frame, metrics)
    if not panels:
        return None
    inpainters = [n for n in inpainters if n in set(frame["inpainter"])]
    if not inpainters:
        return None
    bins = sorted(dict.fromkeys(frame["coverage_bin"].astype(str)), key=_bin_start)
    counts = frame.groupby(frame["coverage_bin"].astype(str))["n"].max() if "n" in frame else {}
    ticks = [f"{b}\nn={int(counts[b])}" if b in counts else b for b in bins]
    with _style():
        fig, axes = _figure(len(panels), 3, 4.1, 3.0)
        for ax, (column, label, hib) in zip(axes, panels, strict=True):
            for name in inpainters:
                sub = frame[frame["inpainter"] == name]
                if sub.empty or sub[column].isna().all():
                    continue
                values = sub.groupby(sub["coverage_bin"].astype(str))[column].mean()
                values = values.reindex(bins)
                ax.plot(
                    range(len(bins)),
                    values.to_numpy(float),
                    marker="o",
                    ms=4,
                    color=colors[name],
                    label=_short(name, 20),
                )
            ax.set_xticks(range(len(bins)), ticks, fontsize=7.5)
            ax.set_title(label + _arrow(hib))
        # Any panel may lack an inpainter (no values): collect the legend from all of them.
        legend: dict[str, Any] = {}
        for ax in axes:
            for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
                legend.setdefault(name, handle)
        if legend:
            fig.legend(
                legend.values(),
                legend.keys(),
                loc="outside upper center",
                ncols=min(len(legend), 6),
            )
        fig.supxlabel("hole coverage of the crop", fontsize=9)
        return _data_uri(fig)


def identity_distributions(
    per_image: pd.DataFrame, inpainters: Sequence[str], colors: Mapping[str, Any]
) -> str | None:
    """Violins of each image's identity similarity, per inpainter, one panel per recognizer."""
    if per_image is None or per_image.empty:
        return None
    columns = [c for c in per_image.columns if c.startswith("id_sim.")]
    frame = per_image
    if "status" in frame:
        frame = frame[frame["status"].fillna("ok") == "ok"]
    panels = []
    for column in columns:
        values = pd.to_numeric(frame[column], errors="coerce")
        keep = np.isfinite(values)
        if keep.any():
            panels.append((column[7:], frame.loc[keep, "inpainter"].astype(str), values[keep]))
    if not panels:
        return None
    import seaborn as sns

    with _style():
        fig, axes = _figure(len(panels), 2, 5.6, 0.9 + 0.5 * len(inpainters))
        for ax, (recognizer, names, values) in zip(axes, panels, strict=True):
            data = pd.DataFrame({"inpainter": names.map(_short), "score": values.to_numpy()})
            order = [_short(n) for n in inpainters if _short(n) in set(data["inpainter"])]
            palette = {_short(n): colors[n] for n in inpainters}
            sns.violinplot(
                data=data,
                x="score",
                y="inpainter",
                hue="inpainter",
                order=order,
                hue_order=order,
                palette=palette,
                legend=False,
                inner="quart",
                cut=0,
                density_norm="width",
                linewidth=0.8,
                ax=ax,
            )
            ax.set_title(f"identity similarity to the clean crop · {_short(recognizer)} ↑")
            ax.set_xlabel("cosine similarity of embeddings")
            ax.set_ylabel("")
        return _data_uri(fig)
