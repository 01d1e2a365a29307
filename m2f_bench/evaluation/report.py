"""``m2f-bench report``: rebuild aggregates, summary.csv and report.html from saved files."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from m2f_bench._io import atomic_write_json
from m2f_bench.errors import M2FError
from m2f_bench.evaluation.aggregate import aggregate


def load_run(run_dir: Path) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """``results.json``, ``per_image.csv`` and ``pair_scores.csv`` of an evaluation folder.

    Raises:
        M2FError: A file is missing or unreadable.
    """
    try:
        results = json.loads((run_dir / "results.json").read_text())
        # Ids and names stay text: an id like 000123 must not become the number 123.
        text = {"image_id": str, "identity": str, "inpainter": str, "mask_type": str}
        per_image = pd.read_csv(
            run_dir / "per_image.csv", keep_default_na=False, na_values=[""], dtype=text
        )
        pair_scores = pd.read_csv(
            run_dir / "pair_scores.csv",
            keep_default_na=False,
            dtype={"inpainter": str, "a": str, "b": str, "identity_a": str},
        )
    except FileNotFoundError as exc:
        raise M2FError(
            f"{run_dir} is not a finished evaluation: {exc.filename} is missing"
        ) from None
    except (ValueError, OSError) as exc:
        raise M2FError(f"cannot read the evaluation in {run_dir}: {exc}") from None
    pair_scores["inpainter"] = pair_scores["inpainter"].fillna("")
    return results, per_image, pair_scores


@contextlib.contextmanager
def _damaged_tables(run_dir: Path) -> Iterator[None]:
    """Saved tables that parse but lack a column or hold a malformed value (a file cut off
    or edited by hand) stop ``report`` with one line naming the folder."""
    try:
        yield
    except M2FError:
        raise
    except (KeyError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise M2FError(
            f"cannot read the evaluation in {run_dir}: damaged tables or results.json "
            f"({type(exc).__name__}: {exc})"
        ) from None


def rebuild(run_dir: str | os.PathLike) -> Path:
    """Recompute every aggregate from the per-item tables and rewrite the reports.

    Returns:
        The path of ``report.html``.
    """
    from m2f_bench.reporting import render_report, write_summary_csv

    run_dir = Path(run_dir)
    try:
        saved = json.loads((run_dir / "results.json").read_text())
    except (OSError, ValueError):
        saved = None
    if isinstance(saved, dict) and saved.get("schema") == "m2f-bench/real-masks/1":
        from m2f_bench.evaluation.realmask import rebuild_real_masks

        with _damaged_tables(run_dir):
            return rebuild_real_masks(run_dir)
    results, per_image, pair_scores = load_run(run_dir)
    if not isinstance(results, dict):
        raise M2FError(f"{run_dir / 'results.json'} is not a mapping of keys: not an evaluation")
    missing = [k for k in ("protocol", "inpainters", "recognizers", "metrics") if k not in results]
    if missing:
        raise M2FError(f"{run_dir / 'results.json'} lacks {', '.join(missing)}: not an evaluation")
    with _damaged_tables(run_dir):
        results.update(aggregate(results, per_image, pair_scores))
    atomic_write_json(run_dir / "results.json", results)
    write_summary_csv(run_dir, results)
    return render_report(run_dir, results, per_image, pair_scores)
