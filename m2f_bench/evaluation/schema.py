"""The layout of an evaluation folder and the columns of its summary table.

Shared by the runner that writes an evaluation and the reports that read it.
"""

from __future__ import annotations

from m2f_bench.prepare.layout import LAYOUT

#: Where the evaluation keeps its images, relative to its folder: the prepared faces in
#: ``prepared/`` (laid out by :mod:`m2f_bench.prepare.layout`), then each inpainter's output.
PATHS = {
    "crop": "prepared/" + LAYOUT["crops"],
    "masked": "prepared/" + LAYOUT["masked"],
    "hole": "prepared/" + LAYOUT["holes"],
    "landmarks": "prepared/" + LAYOUT["landmarks"],
    "inpainted": "inpainted/{inpainter}/{image_id}.png",
}

#: Leading columns of ``summary.csv``, one row per (inpainter, recognizer).
SUMMARY_COLUMNS = (
    "inpainter",
    "recognizer",
    "n_images",
    "n_pairs",
    "psnr",
    "ssim",
    "psnr_hole",
    "ssim_hole",
    "l1_hole",
    "id_sim",
    "acc_clean_clean",
    "acc_masked_clean",
    "acc_inpainted_clean",
    "acc_masked_masked",
    "acc_inpainted_inpainted",
    "auc_inpainted_clean",
    "tar_far1e-3_inpainted_clean",
)
#: Wall times live in ``results.json`` only (``inpainters.<name>.seconds``, ``timings``), so
#: that two runs of a protocol give byte-identical tables.
