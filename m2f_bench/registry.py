"""One small registry type for every plug-in family (datasets, mask styles, inpainters ...).

Entries are registered with a decorator, or lazily as ``"module:attr"`` so that heavy
back-ends are imported only when used. Third-party packages add entries through an
entry-point group. A duplicate name is an error; an unknown name lists close matches.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Iterator, Mapping
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from m2f_bench.errors import M2FError, UnknownNameError

T = TypeVar("T")


def load_target(target: str) -> Any:
    """Import ``"package.module:attr"`` and return the attribute.

    Raises:
        M2FError: The string is malformed, or the module or attribute does not exist.
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise M2FError(f"target {target!r} must look like 'package.module:Name'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise M2FError(f"cannot import {module_name!r} for {target!r}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise M2FError(f"module {module_name!r} has no attribute {attr!r}") from None
    return obj


def check_arguments(
    label: str,
    factory: Callable[..., Any],
    arguments: Mapping[str, Any],
    *,
    supplied: tuple[str, ...] = (),
) -> None:
    """Check keyword arguments from a protocol against a plug-in's signature.

    Args:
        label: What to call the plug-in in messages (``inpainter 'opencv-telea'``).
        factory: A class or function.
        arguments: The keyword arguments, as read from a protocol file.
        supplied: Parameters the caller fills in itself (e.g. ``settings``).

    Raises:
        M2FError: An argument is unknown (with the closest known one), or a required one
            is missing.
    """
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # some extension types have no signature
        return
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    named = [p.name for p in parameters.values() if p.kind in kinds and p.name not in supplied]
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        for key in arguments:
            if key not in named:
                close = difflib.get_close_matches(str(key), named, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise M2FError(
                    f"{label} has no argument {key!r}{hint} "
                    f"(arguments: {', '.join(named) or 'none'})"
                )
    for p in parameters.values():
        if (
            p.kind in kinds
            and p.default is inspect.Parameter.empty
            and p.name not in arguments
            and p.name not in supplied
        ):
            raise M2FError(f"{label} needs argument {p.name!r}")


class Registry(Generic[T]):
    """Name → object map for one plug-in family.

    Args:
        kind: What the entries are, for messages ("inpainter", "dataset").
        entry_point_group: Entry-point group scanned for third-party entries.
    """

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, T | str] = {}
        self._entry_points_loaded = entry_point_group is None

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; without ``obj``, return a decorator."""
        if obj is not None:
            self._add(name, obj)
            return obj

        def decorator(value: T) -> T:
            self._add(name, value)
            return value

        return decorator

    def register_lazy(self, name: str, target: str) -> None:
        """Register ``"module:attr"``, imported on first :meth:`get`."""
        if ":" not in target:
            raise ValueError(f"lazy target {target!r} must look like 'module:attr'")
        self._add(name, target)

    def _add(self, name: str, value: T | str) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = value

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in entry_points(group=self.entry_point_group):
            if ep.name not in self._entries:
                self._entries[ep.name] = ep.value

    def get(self, name: str) -> T:
        """The entry called ``name``, importing it if it was registered lazily.

        Raises:
            UnknownNameError: No such entry; the message lists close matches.
        """
        if name not in self._entries:
            self._load_entry_points()
        if name not in self._entries:
            known = self.names()
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}{hint} (known: {', '.join(known) or 'none'})"
            )
        value = self._entries[name]
        if isinstance(value, str):
            value = load_target(value)
            self._entries[name] = value
        return value

    def names(self) -> list[str]:
        """Every registered name, third-party entries included, sorted."""
        self._load_entry_points()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load_entry_points()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())
