"""m2f-bench: how much of a face, and of its identity, comes back when a mask is removed."""

__version__ = "0.1.0"
