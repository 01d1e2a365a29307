"""Faces: detection, 68-point landmarks and alignment into the ArcFace-compatible crop."""

from m2f_bench.faces.align import CropGeometry
from m2f_bench.faces.detect import DETECTORS, Detection
from m2f_bench.faces.pipeline import AlignedFace, FaceAligner

__all__ = ["DETECTORS", "AlignedFace", "CropGeometry", "Detection", "FaceAligner"]
