"""The ``prepare`` stage: detection, alignment, landmarks and synthetic masks on disk."""

from m2f_bench.prepare.runner import MANIFEST_COLUMNS, PrepareConfig, PrepareSummary, prepare

__all__ = ["MANIFEST_COLUMNS", "PrepareConfig", "PrepareSummary", "prepare"]
