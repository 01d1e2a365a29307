"""Reporting: summary CSV and a self-contained HTML report, rebuilt from an evaluation's files.

Plots need matplotlib and seaborn, imported on first use; screenshots of a report
(:mod:`m2f_bench.reporting.browser`) need Debian's ``chromium``.
"""

from __future__ import annotations

from m2f_bench.reporting.html import SUMMARY_COLUMNS, render_report, write_summary_csv

__all__ = ["SUMMARY_COLUMNS", "render_report", "write_summary_csv"]
