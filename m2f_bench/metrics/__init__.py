"""Metrics: pixel fidelity of restored crops and face-verification statistics.

``METRICS.get(name)`` returns a ready :class:`PixelMetric` object, called as
``metric(restored, reference, holes)``; third parties add theirs through the entry-point
group ``m2f_bench.metrics``. Verification statistics live in
:mod:`m2f_bench.metrics.verification`.
"""

from __future__ import annotations

from m2f_bench.metrics.base import PixelMetric, aggregate, check_batch
from m2f_bench.registry import Registry

#: Pixel metrics by name; the built-ins are imported (with scipy) on first use.
METRICS: Registry[PixelMetric] = Registry("metric", "m2f_bench.metrics")
METRICS.register_lazy("psnr", "m2f_bench.metrics.pixel:PSNR")
METRICS.register_lazy("ssim", "m2f_bench.metrics.pixel:SSIM")
METRICS.register_lazy("psnr_hole", "m2f_bench.metrics.pixel:PSNR_HOLE")
METRICS.register_lazy("ssim_hole", "m2f_bench.metrics.pixel:SSIM_HOLE")
METRICS.register_lazy("l1_hole", "m2f_bench.metrics.pixel:L1_HOLE")

__all__ = ["METRICS", "PixelMetric", "aggregate", "check_batch"]
