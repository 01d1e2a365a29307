"""Evaluation: protocol files, the runner, and aggregation of its per-item tables."""

from m2f_bench.evaluation.protocol import Protocol, ProtocolError, load_protocol, parse_protocol

__all__ = ["Protocol", "ProtocolError", "load_protocol", "parse_protocol"]
