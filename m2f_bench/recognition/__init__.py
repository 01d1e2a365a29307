"""Recognition: identity embeddings of aligned crops, their similarity, and their cache.

Built-ins: ``arcface-onnx`` (any ArcFace-family ONNX model) and ``dlib-resnet``; ``python``
builds any importable :class:`Recognizer` subclass. Installed packages add more through
the ``m2f_bench.recognizers`` entry-point group.
"""

from m2f_bench.recognition import python  # noqa: F401  (registration)
from m2f_bench.recognition.base import RECOGNIZERS, Recognizer, build_recognizer, cosine
from m2f_bench.recognition.cache import EmbeddingCache

RECOGNIZERS.register_lazy("arcface-onnx", "m2f_bench.recognition.arcface_onnx:ArcFaceONNX")
RECOGNIZERS.register_lazy("dlib-resnet", "m2f_bench.recognition.dlib_resnet:DlibResNet")

__all__ = ["RECOGNIZERS", "EmbeddingCache", "Recognizer", "build_recognizer", "cosine"]
