"""Recognition: identity embeddings of aligned crops, their similarity, and their cache."""

from m2f_bench.recognition.base import RECOGNIZERS, Recognizer, build_recognizer, cosine
from m2f_bench.recognition.cache import EmbeddingCache

RECOGNIZERS.register_lazy("arcface-onnx", "m2f_bench.recognition.arcface_onnx:ArcFaceONNX")
RECOGNIZERS.register_lazy("dlib-resnet", "m2f_bench.recognition.dlib_resnet:DlibResNet")

__all__ = ["RECOGNIZERS", "EmbeddingCache", "Recognizer", "build_recognizer", "cosine"]
