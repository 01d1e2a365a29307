"""``m2f-bench validate``: a protocol's names and arguments, checked without running it."""

from __future__ import annotations

from typing import Any

from m2f_bench.errors import M2FError, UnknownNameError
from m2f_bench.evaluation.protocol import Protocol, ProtocolError
from m2f_bench.registry import check_arguments


def check_protocol(protocol: Protocol, source: str = "<protocol>") -> None:
    """Check every registered name and plug-in argument of a validated protocol.

    Nothing is built: no model file is opened and no dataset is read.

    Raises:
        ProtocolError: Every problem, each with the key path it was found at.
    """
    from m2f_bench.data import DATASETS
    from m2f_bench.inpainters import INPAINTERS
    from m2f_bench.masks import MASK_STYLES
    from m2f_bench.metrics import METRICS
    from m2f_bench.recognition import RECOGNIZERS

    problems: list[str] = []

    def at(path: str, check) -> None:
        try:
            check()
        except M2FError as exc:
            problems.append(f"{path}: {exc}")

    at("dataset.name", lambda: DATASETS.get(protocol.dataset.name))
    # Options are the dataset class's constructor arguments; a wrong one must not surface
    # as a TypeError when the dataset is opened.
    at(
        "dataset.options",
        lambda: check_arguments(
            f"dataset {protocol.dataset.name!r}",
            DATASETS.get(protocol.dataset.name),
            protocol.dataset.options,
            supplied=("root",),
        ),
    )
    for i, name in enumerate(protocol.masks.types or ()):
        at(f"masks.types.{i}", lambda name=name: MASK_STYLES.get(name))
    try:
        real = bool(getattr(DATASETS.get(protocol.dataset.name), "real_masks", False))
    except M2FError:
        real = False
    for i, plugin in enumerate(protocol.inpainters):
        at(
            f"inpainters.{i}",
            lambda p=plugin: _check_inpainter(p.type, INPAINTERS.get(p.type), p.args, real),
        )
    for i, plugin in enumerate(protocol.recognizers):
        at(
            f"recognizers.{i}",
            lambda p=plugin: _check_recognizer(p.type, RECOGNIZERS.get(p.type), p.args),
        )
    for i, name in enumerate(protocol.metrics):
        if name == "id_sim":
            if not protocol.recognizers:
                problems.append(f"metrics.{i}: id_sim needs a recognizer")
            continue
        at(f"metrics.{i}", lambda name=name: METRICS.get(name))
    if problems:
        # Every problem at once, in one line: fixing one should not reveal the next.
        raise ProtocolError(f"{source}: " + "; ".join(problems))


def _check_inpainter(name: str, factory: Any, args: dict[str, Any], real: bool = False) -> None:
    """Arguments against the constructor; ``hole`` / ``segmenter`` against the segmenters.
    On a dataset of real masks there is no exact hole to give."""
    from m2f_bench.evaluation.holes import check_hole_source, split_hole_args

    if real and args.get("hole") == "exact":
        raise M2FError("real masks have no exact hole: use hole: predicted (or leave it out)")
    from m2f_bench.inpainters.base import Inpainter

    rest, source = split_hole_args(args, factory)
    check_arguments(f"inpainter {name!r}", factory, rest)
    if isinstance(factory, type) and issubclass(factory, Inpainter):
        factory.check_spec(rest)
    check_hole_source(source, factory)


def _check_recognizer(name: str, factory: Any, args: dict[str, Any]) -> None:
    """Arguments against the constructor, then the recognizer's own check of their values."""
    from m2f_bench.recognition import Recognizer

    check_arguments(f"recognizer {name!r}", factory, args, supplied=("settings",))
    if isinstance(factory, type) and issubclass(factory, Recognizer):
        factory.check_spec(args)


def check_files(protocol: Protocol, settings: Any, source: str = "<protocol>") -> None:
    """Check every model and weights file the protocol's plug-ins need, all at once.

    Raises:
        ModelNotFoundError: One line listing each missing file with the key it belongs to.
    """
    from m2f_bench.errors import ModelNotFoundError
    from m2f_bench.inpainters import INPAINTERS
    from m2f_bench.inpainters.base import Inpainter
    from m2f_bench.recognition import RECOGNIZERS

    problems = []
    for section, registry, plugins in (
        ("inpainters", INPAINTERS, protocol.inpainters),
        ("recognizers", RECOGNIZERS, protocol.recognizers),
    ):
        for i, plugin in enumerate(plugins):
            try:
                factory = registry.get(plugin.type)
                args = plugin.args
                if section == "inpainters":
                    from m2f_bench.evaluation.holes import check_hole_files, split_hole_args

                    try:
                        args, holes = split_hole_args(args, factory)
                        if isinstance(factory, type) and issubclass(factory, Inpainter):
                            factory.check_spec(args)
                    except M2FError:
                        continue  # check_protocol reports bad values (hole:, weights: ...)
                    check_hole_files(holes, factory, settings)
                check = getattr(factory, "check_files", None)
                if check is not None:
                    check(args, settings)
            except UnknownNameError:
                continue  # check_protocol reports unknown names
            except M2FError as exc:
                problems.append(f"{section}.{i} ({plugin.label}): {exc}")
    if problems:
        raise ModelNotFoundError(f"{source}: " + "; ".join(problems))
