"""The ``m2f-bench`` command line. Thin: it parses options and calls the library."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from m2f_bench import __version__
from m2f_bench.errors import M2FError

app = typer.Typer(
    help="Benchmark face-mask removal: pixel fidelity and face-verification accuracy.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain click help: "[default: …]" in a help text stays text, flags show no type.
    rich_markup_mode=None,
)
masks_app = typer.Typer(help="Synthetic face masks.", no_args_is_help=True)
benchmark_app = typer.Typer(help="Throughput and memory benchmarks.", no_args_is_help=True)
app.add_typer(masks_app, name="masks")
app.add_typer(benchmark_app, name="benchmark")

DataHome = Annotated[
    Path | None,
    typer.Option(help="Datasets folder [default: $M2F_DATA_HOME, else the user cache]."),
]
ModelHome = Annotated[
    Path | None,
    typer.Option(help="Model weights folder [default: $M2F_MODEL_HOME, else the user cache]."),
]
Offline = Annotated[bool, typer.Option("--offline", help="Never download; report what is missing.")]
Root = Annotated[Path | None, typer.Option(help="Dataset folder [default: <data home>/<dataset>].")]
Size = Annotated[int, typer.Option(help="Side of the aligned crop in pixels.", min=32, max=2048)]
Seed = Annotated[int, typer.Option(help="Seed for masks and subsets.")]
Detector = Annotated[
    str, typer.Option(help="auto (SCRFD, dlib HOG as fallback), scrfd or dlib-hog.")
]


def _one_line(exc: BaseException) -> str:
    """The message of an error; one raised in a PyTorch DataLoader worker arrives with the
    worker's traceback in it, of which the last line is the message."""
    text = str(exc)
    if "Original Traceback" not in text:
        return text
    last = [line for line in text.splitlines() if line.strip()][-1]
    return "in a data-loader worker: " + (last.split(": ", 1)[1] if ": " in last else last)


def cli_errors(func):
    """Turn user errors into one line on stderr and exit code 2; Ctrl-C into exit 130."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from m2f_bench.settings import DATA_HOME_ENV, MODEL_HOME_ENV

        saved = {name: os.environ.get(name) for name in (DATA_HOME_ENV, MODEL_HOME_ENV)}
        try:
            return func(*args, **kwargs)
        except M2FError as exc:
            typer.echo(f"error: {_one_line(exc)}", err=True)
            raise typer.Exit(2) from None
        except OSError as exc:  # unwritable folder, disk full, a file where a folder goes
            where = f": {exc.filename}" if exc.filename else ""
            typer.echo(f"error: {exc.strerror or _one_line(exc)}{where}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted; run the same command again to resume", err=True)
            raise typer.Exit(130) from None
        finally:  # what _settings exported, for an in-process caller
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    return wrapper


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version.", callback=_print_version, is_eager=True
        ),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s: %(message)s",
        stream=sys.stderr,
    )


def _settings(data_home: Path | None, model_home: Path | None, offline: bool):
    """The command's settings, also put in the environment until the command ends
    (:func:`cli_errors` restores it): library code that resolves settings itself (model
    cards found by ``unet-gan``, worker processes) then sees ``--data-home`` /
    ``--model-home`` too, not only ``M2F_*`` variables."""
    from m2f_bench.settings import DATA_HOME_ENV, MODEL_HOME_ENV, Settings

    settings = Settings.resolve(data_home, model_home, offline=offline or None)
    # Only what the options set: without them the variables stay as the user left them
    # (a protocol's ${M2F_MODEL_HOME:-models} keeps its fallback).
    if data_home is not None:
        os.environ[DATA_HOME_ENV] = str(settings.data_home)
    if model_home is not None:
        os.environ[MODEL_HOME_ENV] = str(settings.model_home)
    return settings


@contextlib.contextmanager
def _offline_environment(settings):
    """While a command runs: tell plug-ins built from a spec, which never see the settings
    (and the Hugging Face libraries behind the diffusers inpainter), that it is offline.
    The environment is restored afterwards, so an in-process caller is not affected."""
    from m2f_bench.settings import OFFLINE_ENV

    names = (OFFLINE_ENV, "HF_HUB_OFFLINE")
    before = {name: os.environ.get(name) for name in names}
    if settings.offline:
        os.environ.update(dict.fromkeys(names, "1"))
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _open_dataset(name: str, settings, root: Path | None):
    from m2f_bench.data import DATASETS

    return DATASETS.get(name).open(settings, root)


def _mask_types(value: str | None) -> tuple[str, ...]:
    from m2f_bench.masks import MASK_STYLES, MASK_TYPES

    if not value:
        return MASK_TYPES
    types = tuple(t.strip() for t in value.split(",") if t.strip())
    for t in types:
        MASK_STYLES.get(t)  # unknown names fail here, with close matches
    return types


def _subset(records: list, limit: int | None, seed: int) -> list:
    """A seeded subset of ``limit`` records in dataset order (a larger limit is a superset)."""
    from m2f_bench.evaluation.selection import limit_selection

    if limit is None or limit >= len(records):
        return records
    return limit_selection(records, [], limit, seed)[0]


@app.command()
@cli_errors
def prepare(
    dataset: Annotated[
        str, typer.Argument(help="Dataset name: lfw, celeba, celebahq, folder, demo.")
    ],
    split: Annotated[str, typer.Option(help="train, test or all.")] = "test",
    size: Size = 128,
    limit: Annotated[int | None, typer.Option(help="Prepare a seeded subset of N images.")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder.")] = None,
    mask_types: Annotated[
        str | None, typer.Option(help="Comma-separated mask types [default: all].")
    ] = None,
    seed: Seed = 0,
    detector: Detector = "auto",
    det_size: Annotated[int | None, typer.Option(help="SCRFD input size (multiple of 32).")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes.", min=1)] = min(
        4, os.cpu_count() or 1
    ),
    root: Root = None,
    data_home: DataHome = None,
    model_home: ModelHome = None,
    offline: Offline = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Detect, align, landmark and mask a face dataset; write crops, masks and a manifest."""
    from m2f_bench.faces.pipeline import AlignerConfig
    from m2f_bench.prepare import PrepareConfig
    from m2f_bench.prepare import prepare as run_prepare
    from m2f_bench.prepare.runner import dataset_source

    if split not in ("train", "test", "all"):
        raise M2FError(f"unknown split {split!r}; choose train, test or all")
    if det_size is not None and det_size % 32:
        raise M2FError(f"--det-size must be a multiple of 32, got {det_size}")
    settings = _settings(data_home, model_home, offline)
    ds = _open_dataset(dataset, settings, root)
    types = _mask_types(mask_types)
    records = _subset(ds.select(split), limit, seed)
    if not records:
        hint = (
            "; use --split all to prepare every image (train holds the people of folds 1–5, "
            "test the pairs of folds 6–10: a dataset needs about 10 identities, several with "
            "two or more images, for both to be non-empty)"
            if split != "all"
            else ""
        )
        raise M2FError(f"the {split} split of {dataset} has no images{hint}")
    aligner = AlignerConfig.resolve(
        settings, size=size, detector=detector, det_size=det_size, threads=1
    )
    config = PrepareConfig(
        dataset=dataset,
        dataset_root=str(ds.root),
        aligner=aligner,
        mask_types=types,
        seed=seed,
        dataset_source=dataset_source(ds),
    )
    out = out or Path("runs") / f"prepared-{dataset}-{split}-{size}"
    summary = run_prepare(records, config, out, workers=workers, progress=progress)
    rate = 100.0 * summary.n_failed / max(1, summary.n_images)
    typer.echo(
        f"{summary.n_ok} of {summary.n_images} images prepared, {summary.n_failed} failed "
        f"({rate:.2f} %), {summary.n_reused} reused, {summary.seconds:.1f} s → {out}"
    )
    for reason, count in sorted(summary.failures.items()):
        typer.echo(f"  failed: {count} × {reason}")
    for mask_type, count in sorted(summary.mask_failures.items()):
        typer.echo(f"  failed: {count} × mask {mask_type} (see manifest.csv)")
    for t, c in summary.coverage.items():
        typer.echo(
            f"  coverage {t:<15} mean {c['mean']:.3f}  min {c['min']:.3f}  max {c['max']:.3f}"
        )


@masks_app.command("preview")
@cli_errors
def masks_preview(
    dataset: Annotated[str, typer.Argument(help="Dataset to draw faces from.")] = "lfw",
    n: Annotated[int, typer.Option(help="Number of faces (rows).", min=1, max=200)] = 24,
    size: Size = 128,
    seed: Seed = 0,
    mask_types: Annotated[
        str | None, typer.Option(help="Comma-separated mask types [default: all].")
    ] = None,
    image: Annotated[
        list[Path] | None,
        typer.Option(help="Use these photos instead of the dataset (repeatable)."),
    ] = None,
    out: Annotated[Path, typer.Option(help="PNG file to write.")] = Path("mask-preview.png"),
    detector: Detector = "auto",
    root: Root = None,
    data_home: DataHome = None,
    model_home: ModelHome = None,
    offline: Offline = False,
) -> None:
    """Render a contact sheet: each face unmasked and with every mask type."""
    from m2f_bench._io import read_image, write_png
    from m2f_bench.errors import BadImageError, NoFaceError
    from m2f_bench.faces.pipeline import AlignerConfig
    from m2f_bench.masks import contact_sheet

    settings = _settings(data_home, model_home, offline)
    types = _mask_types(mask_types)
    aligner = AlignerConfig.resolve(settings, size=size, detector=detector).build()
    if image:
        sources = [(p, p.stem) for p in image]
    else:
        ds = _open_dataset(dataset, settings, root)
        pool = _subset(ds.select("test") or ds.records(), n * 2, seed)
        sources = [(r.path, r.image_id) for r in pool]
    faces = []
    for path, image_id in sources:
        try:
            face = aligner.align(read_image(path))
        except (BadImageError, NoFaceError) as exc:
            typer.echo(f"skipped {path}: {exc}", err=True)
            continue
        faces.append((face.crop, face.landmarks, image_id))
        if len(faces) == n:
            break
    if not faces:
        raise M2FError("no face to preview")
    write_png(out, contact_sheet(faces, types, seed=seed))
    typer.echo(f"{len(faces)} faces × {len(types)} mask types → {out}")


@masks_app.command("paint")
@cli_errors
def masks_paint(
    dataset: Annotated[str, typer.Argument(help="Identity dataset to take photos from.")],
    out: Annotated[Path, typer.Option(help="masked-folder dataset to write.")],
    share: Annotated[
        float, typer.Option(help="Share of each person's photos that get a mask.")
    ] = 0.5,
    split: Annotated[str, typer.Option(help="train, test or all.")] = "test",
    limit_people: Annotated[
        int | None, typer.Option(help="At most this many people (seeded).", min=1)
    ] = None,
    seed: Seed = 0,
    mask_types: Annotated[
        str | None, typer.Option(help="Comma-separated mask types [default: all].")
    ] = None,
    detector: Detector = "auto",
    root: Root = None,
    data_home: DataHome = None,
    model_home: ModelHome = None,
    offline: Offline = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Draw synthetic masks into whole photos: a masked-folder dataset (people with and
    without masks) for the real-mask protocol, from any identity dataset."""
    import hashlib

    from m2f_bench.faces.pipeline import AlignerConfig
    from m2f_bench.masks.paint import paint_masked_folder

    settings = _settings(data_home, model_home, offline)
    ds = _open_dataset(dataset, settings, root)
    records = ds.select(split) if getattr(ds, "has_splits", True) else ds.records()
    if limit_people is not None:
        people = sorted(
            {r.identity for r in records},
            key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest(),
        )
        chosen = set(people[:limit_people])
        records = [r for r in records if r.identity in chosen]
    aligner = AlignerConfig.resolve(settings, detector=detector).build()
    summary = paint_masked_folder(
        records,
        aligner,
        out,
        share=share,
        seed=seed,
        mask_types=tuple(_mask_types(mask_types)),
        progress=progress,
    )
    for path, reason in summary.failed:
        typer.echo(f"skipped {path}: {reason}", err=True)
    typer.echo(
        f"{summary.people} people: {summary.masked} photos masked, {summary.clean} copied "
        f"clean, {len(summary.failed)} failed → {out}"
    )


@app.command()
@cli_errors
def evaluate(
    protocol: Annotated[Path, typer.Argument(help="Protocol YAML file.")],
    out: Annotated[
        Path | None, typer.Option(help="Output folder [default: runs/<protocol name>].")
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            help="A balanced subset: about N/2 pairs, at most N images, but at least one "
            "matched and one mismatched pair per fold (LFW test: 10 pairs).",
            min=1,
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    workers: Annotated[int, typer.Option(help="Processes for face preparation.", min=1)] = min(
        2, os.cpu_count() or 1
    ),
    data_home: DataHome = None,
    model_home: ModelHome = None,
    offline: Offline = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Run a protocol: inpainters, metrics and verification; write CSV, JSON and HTML."""
    from m2f_bench.errors import DataNotFoundError, ModelNotFoundError
    from m2f_bench.evaluation import load_protocol
    from m2f_bench.evaluation.runner import evaluate as run_evaluate

    if device not in ("cpu", "cuda"):
        raise M2FError(f"unknown device {device!r}; choose cpu or cuda")
    # Settings first: --model-home / --data-home also reach ${M2F_*} in the protocol, as
    # in `validate`.
    settings = _settings(data_home, model_home, offline)
    spec = load_protocol(protocol)
    out = out or Path("runs") / spec.name
    try:
        with _offline_environment(settings):
            results = run_evaluate(
                spec,
                settings,
                out,
                limit=limit,
                device=device,
                workers=workers,
                progress=progress,
                protocol_file=str(protocol),
            )
    except (DataNotFoundError, ModelNotFoundError) as exc:
        home = (
            f"data home {settings.data_home} (--data-home or M2F_DATA_HOME)"
            if isinstance(exc, DataNotFoundError)
            else f"model home {settings.model_home} (--model-home or M2F_MODEL_HOME)"
        )
        raise M2FError(
            f"{exc}; {home} — or, to try m2f-bench with nothing downloaded: "
            "m2f-bench evaluate protocols/demo.yaml"
        ) from None
    _print_summary(results)
    typer.echo(f"report: {out / 'report.html'}")


def _print_summary(results: dict) -> None:
    def pct(v):
        return "   —  " if v is None else f"{100 * v:6.2f}"

    def num(v, fmt):
        return "  —  " if v is None else format(v, fmt)

    if results.get("schema") == "m2f-bench/real-masks/1":
        c = results["counts"]
        typer.echo(
            f"{c['n_identities']} people in the gallery ({c['n_probed']} with masked photos), "
            f"{c['n_masked']} masked photos ({c['n_masked_no_face']} without a detected face, "
            f"{c['n_masked_failed']} unreadable), {c['n_clean_references']} clean reference "
            "photos"
        )
        typer.echo(
            f"{'condition':<28}{'recognizer':<14}{'found':>7}{'acc':>8}{'AUC':>8}"
            f"{'rank-1':>8}{'rank-5':>8}"
        )
        for row in results["summary"]:
            typer.echo(
                f"{row['condition']:<28}{row['recognizer']:<14}{pct(row.get('mask_found')):>7}"
                f"{pct(row.get('acc')):>8}{num(row.get('auc'), '8.4f')}"
                f"{pct(row.get('rank1')):>8}{pct(row.get('rank5')):>8}"
            )
        for label, state in results["inpainters"].items():
            if state.get("status") == "error":
                typer.echo(f"{label}: error: {state['error']}")
        return
    w = max([16, *(len(str(row["inpainter"])) + 2 for row in results["summary"])])
    typer.echo(
        f"{'inpainter':<{w}}{'recognizer':<14}{'PSNR':>7}{'SSIM':>7}{'PSNRh':>7}{'id_sim':>8}"
        f"{'acc c↔c':>9}{'m↔c':>8}{'i↔c':>8}{'i↔i':>8}"
    )
    for row in results["summary"]:
        if row.get("status") == "error":
            typer.echo(f"{row['inpainter']:<{w}}error: {row['error']}")
            continue
        typer.echo(
            f"{row['inpainter']:<{w}}{row['recognizer'] or '—':<14}"
            f"{num(row['psnr'], '7.2f')}{num(row['ssim'], '7.4f')}"
            f"{num(row['psnr_hole'], '7.2f')}{num(row['id_sim'], '8.4f')}"
            f"{pct(row['acc_clean_clean']):>9}{pct(row['acc_masked_clean']):>8}"
            f"{pct(row['acc_inpainted_clean']):>8}{pct(row['acc_inpainted_inpainted']):>8}"
        )


@app.command()
@cli_errors
def report(
    run_dir: Annotated[Path, typer.Argument(help="An evaluation output folder.")],
    screenshot: Annotated[
        Path | None,
        typer.Option(help="Also render the page in headless Chromium to this PNG."),
    ] = None,
) -> None:
    """Rebuild summary.csv, results.json aggregates and report.html from a run's saved files."""
    from m2f_bench.evaluation.report import rebuild

    path = rebuild(run_dir)
    typer.echo(f"report: {path}")
    if screenshot is not None:
        from m2f_bench.reporting.browser import screenshot as take

        take(path, screenshot)
        typer.echo(f"screenshot: {screenshot}")


@app.command()
@cli_errors
def validate(
    protocols: Annotated[
        list[Path], typer.Argument(help="Protocol (or training config) YAML files.")
    ],
    files: Annotated[
        bool,
        typer.Option(help="Also check that every model and weights file a protocol needs exists."),
    ] = True,
    data_home: DataHome = None,
    model_home: ModelHome = None,
) -> None:
    """Check protocol files without running them: schema, plug-in names and arguments,
    and (with --files) the model files they need. Every problem of every file is listed.

    A training config (a file with a 'model:' and no 'inpainters:') is checked
    against the training schema instead.
    """
    from m2f_bench.evaluation import load_protocol
    from m2f_bench.evaluation.check import check_files, check_protocol

    failed = 0
    settings = _settings(data_home, model_home, True) if files else None
    for path in protocols:
        try:
            if _is_training_config(path):
                from m2f_bench.training.config import file_problems, load_config

                config = load_config(path)
                problems = file_problems(config) if files else []
                identity = getattr(config.loss, "identity", 0)
                if files and identity:
                    from m2f_bench.recognition.arcface_onnx import resolve_model

                    try:
                        resolve_model(config.loss.identity_model, settings)
                    except M2FError as exc:
                        problems.append(f"loss.identity_model: {exc}")
                if problems:  # every problem at once
                    raise M2FError(f"{path}: " + "; ".join(problems))
                typer.echo(f"{path}: ok (training config)")
                continue
            protocol = load_protocol(path)
            problems = []
            checks = [check_protocol] + ([] if settings is None else [check_files])
            for check in checks:  # names and arguments, then files: every problem at once
                try:
                    check(*([protocol, settings] if check is check_files else [protocol]), "")
                except M2FError as exc:
                    problems.append(str(exc).removeprefix(": "))
            if problems:
                raise M2FError(f"{path}: " + "; ".join(problems))
        except M2FError as exc:
            failed += 1
            typer.echo(f"error: {exc}", err=True)
            continue
        typer.echo(f"{path}: ok")
    if failed:
        raise typer.Exit(2)


def _is_training_config(path: Path) -> bool:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False  # the protocol loader reports it properly
    return isinstance(data, dict) and "model" in data and "inpainters" not in data


@app.command("list")
@cli_errors
def list_plugins(
    what: Annotated[
        str,
        typer.Argument(
            help="inpainters, segmenters, recognizers, metrics, datasets, detectors, mask-types, "
            "models or all."
        ),
    ] = "all",
) -> None:
    """List what is available: inpainters, segmenters, recognizers, metrics, datasets,
    detectors, mask types and known model files (third-party plug-ins included)."""
    from m2f_bench.data import DATASETS
    from m2f_bench.faces.detect import DETECTORS
    from m2f_bench.hub import MODEL_FILES
    from m2f_bench.inpainters import list_inpainters
    from m2f_bench.masks import MASK_STYLES
    from m2f_bench.metrics import METRICS
    from m2f_bench.recognition import RECOGNIZERS
    from m2f_bench.segmenters import SEGMENTERS

    groups = {
        "inpainters": [f"{name:<14} {summary}" for name, summary in list_inpainters()],
        "segmenters": SEGMENTERS.names(),
        "recognizers": RECOGNIZERS.names(),
        "metrics": [*METRICS.names(), "id_sim"],
        "datasets": DATASETS.names(),
        "detectors": DETECTORS.names(),
        "mask-types": MASK_STYLES.names(),
        "models": [f"{m.filename}  ({m.origin}; {m.license})" for m in MODEL_FILES.values()]
        + _trained_models(),
    }
    if what != "all" and what not in groups:
        raise M2FError(f"unknown list {what!r}; choose {', '.join(groups)} or all")
    for name, items in groups.items():
        if what in ("all", name):
            typer.echo(f"{name}:")
            for item in items:
                typer.echo(f"  {item}")


def _trained_models() -> list[str]:
    """The model folders model lookup finds (model home, then the checkout's models/)."""
    from m2f_bench.inpainters.cards import iter_cards

    lines = []
    for folder, card, error in iter_cards():
        if card is None:
            lines.append(f"{folder.name}  (skipped: {error})")
            continue
        kind = next((k for k in ("inpainter", "segmenter") if k in card), None)
        what = f"{kind}: {card[kind]}" if kind else "no inpainter: or segmenter: key"
        lines.append(f"{folder.name}  ({what}; {folder})")
    return lines


def _machine_line() -> str:
    import platform

    return f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}"


def _peak_memory_line() -> str:
    import resource

    main_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return f"peak memory: main process {main_mib:.0f} MiB, largest worker {child_mib:.0f} MiB"


@benchmark_app.command("prepare")
@cli_errors
def benchmark_prepare(
    dataset: Annotated[str, typer.Argument(help="Dataset name.")] = "lfw",
    limit: Annotated[int, typer.Option(help="Images to process.", min=1)] = 1000,
    size: Size = 128,
    workers: Annotated[int, typer.Option(help="Worker processes.", min=1)] = 2,
    mask_types: Annotated[
        str | None, typer.Option(help="Comma-separated mask types (default: every type).")
    ] = None,
    root: Root = None,
    data_home: DataHome = None,
    model_home: ModelHome = None,
) -> None:
    """Time 'prepare' (detect + landmarks + align + every mask type + writes) from scratch.

    Prints images/s and the peak resident memory of the main and the worker processes.
    """
    import tempfile

    from m2f_bench.faces.pipeline import AlignerConfig
    from m2f_bench.prepare import PrepareConfig
    from m2f_bench.prepare import prepare as run_prepare

    types = _mask_types(mask_types)
    settings = _settings(data_home, model_home, False)
    ds = _open_dataset(dataset, settings, root)
    records = _subset(ds.records(), limit, 0)
    config = PrepareConfig(
        dataset=dataset,
        dataset_root=str(ds.root),
        aligner=AlignerConfig.resolve(settings, size=size, threads=1),
        mask_types=types,
    )
    with tempfile.TemporaryDirectory(prefix="m2f-bench-") as tmp:
        summary = run_prepare(records, config, tmp, workers=workers, progress=False)
    typer.echo(_machine_line())
    typer.echo(
        f"prepare {dataset}: {summary.n_images} images, size {size}, {len(types)} mask "
        f"types, {workers} workers: {summary.images_per_second:.1f} images/s "
        f"({summary.seconds:.1f} s, {summary.n_failed} failed) = "
        f"{summary.images_per_second * len(types):.0f} masked crops/s"
    )
    typer.echo(_peak_memory_line())


@benchmark_app.command("train")
@cli_errors
def benchmark_train(
    configs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Training configs [default: protocols/train-unet-gan.yaml and "
            "protocols/train-baseline-gan.yaml]."
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    threads: Annotated[
        int | None, typer.Option(help="Intra-op CPU threads [default: one per core].", min=1)
    ] = None,
    steps: Annotated[int, typer.Option(help="Timed training steps per model.", min=1)] = 6,
    onnx: Annotated[bool, typer.Option(help="Also time ONNX Runtime inference.")] = True,
) -> None:
    """Training and inference images/s (batch 32) of the learned inpainters, peak memory.

    Synthetic batches, untimed warm-up steps; the data loader is not included.
    """
    import platform

    import torch

    from m2f_bench.training.benchmark import benchmark_inference, benchmark_training, format_line
    from m2f_bench.training.config import TrainConfig, load_config

    if threads is not None:
        torch.set_num_threads(threads)
    paths = configs or [
        Path("protocols/train-unet-gan.yaml"),
        Path("protocols/train-baseline-gan.yaml"),
    ]
    typer.echo(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
        + (
            f", {torch.cuda.get_device_name()}"
            if device != "cpu" and torch.cuda.is_available()
            else ""
        )
    )
    for path in paths:
        spec = load_config(path)
        if not isinstance(spec, TrainConfig):
            raise M2FError(
                f"{path} trains a segmenter: `benchmark train` times the inpainters "
                "(segmenters: m2f-bench benchmark segment)"
            )
        typer.echo(format_line(benchmark_training(spec, device=device, steps=steps)))
        for line in benchmark_inference(spec, device=device, onnx=onnx):
            typer.echo(format_line(line))


@benchmark_app.command("segment")
@cli_errors
def benchmark_segment(
    prepared: Annotated[Path, typer.Argument(help="A prepare output folder (all mask types).")],
    segmenter: Annotated[str, typer.Option(help="Segmenter type.")] = "mask-unet",
    weights: Annotated[
        str | None, typer.Option(help="Segmenter weights [default: its model card].")
    ] = None,
    split: Annotated[str, typer.Option(help="The manifest split to read.")] = "test",
    limit: Annotated[
        int | None, typer.Option(help="At most this many faces [default: all].", min=1)
    ] = None,
    dilate: Annotated[
        int | None,
        typer.Option(help="Grow the hole by N px [default: the segmenter's, 0].", min=0),
    ] = None,
    threads: Annotated[int | None, typer.Option(help="Torch threads.", min=1)] = None,
) -> None:
    """Hole IoU of a segmenter on synthetic masks, masks found on bare faces, and speed.

    Every (face, mask type) of the prepared split is segmented and compared with its
    exact hole; the faces' unmasked crops measure the false-positive rate (share of bare
    faces in which a mask is found).
    """
    import time

    import numpy as np
    import pandas as pd

    from m2f_bench._io import read_image, read_mask_png
    from m2f_bench.segmenters import build_segmenter, hole_iou, mask_found

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    rows = pd.read_csv(prepared / "manifest.csv", dtype=str, keep_default_na=False)
    rows = rows[(rows.status == "ok") & (rows.split == split)]
    ids = (
        list(dict.fromkeys(rows.image_id))[:limit] if limit else list(dict.fromkeys(rows.image_id))
    )
    rows = rows[rows.image_id.isin(set(ids))]
    if rows.empty:
        raise M2FError(f"{prepared / 'manifest.csv'} has no prepared face in split {split!r}")
    spec = {"type": segmenter} | ({"weights": weights} if weights else {})
    if dilate is not None:
        spec["dilate"] = dilate
    model = build_segmenter(spec)
    start = time.perf_counter()
    ious, types, found = [], [], []
    for mask_type, group in rows.groupby("mask_type", sort=True):
        for s in range(0, len(group), 256):
            part = group.iloc[s : s + 256]
            images = np.stack([read_image(prepared / p) for p in part.masked_path])
            truth = np.stack([read_mask_png(prepared / p) for p in part.hole_path])
            holes = model.holes(images)
            ious.append(hole_iou(holes, truth))
            found.append(mask_found(holes))
            types += [mask_type] * len(part)
    clean_found = []
    for s in range(0, len(ids), 256):
        images = np.stack([read_image(prepared / f"crops/{i}.png") for i in ids[s : s + 256]])
        clean_found.append(mask_found(model.holes(images)))
    seconds = time.perf_counter() - start
    iou, found_all, clean = np.concatenate(ious), np.concatenate(found), np.concatenate(clean_found)
    typer.echo(_machine_line())
    typer.echo(
        f"{segmenter}: {len(iou)} masked crops ({len(ids)} faces × mask types), split {split}; "
        f"threshold {model.threshold}, dilate {model.dilate} px, min coverage {model.min_coverage}"
    )
    table = pd.DataFrame({"type": types, "iou": iou})
    for mask_type, group in table.groupby("type"):
        typer.echo(f"  {mask_type:<16} hole IoU {group.iou.mean():.4f}  (n={len(group)})")
    typer.echo(
        f"hole IoU {iou.mean():.4f} (median {np.median(iou):.4f}, ≥ 0.9 on "
        f"{100 * (iou >= 0.9).mean():.1f} %); masks found on {100 * found_all.mean():.2f} % "
        f"of masked crops and on {100 * clean.mean():.2f} % of {len(clean)} bare faces "
        "(false positives)"
    )
    n = len(iou) + len(clean)
    typer.echo(f"{n} crops in {seconds:.1f} s = {n / seconds:.0f} crops/s (with PNG decoding)")
    typer.echo(_peak_memory_line())


@benchmark_app.command("recognize")
@cli_errors
def benchmark_recognize(
    prepared: Annotated[Path, typer.Argument(help="A prepare output folder (crops, landmarks).")],
    recognizer: Annotated[str, typer.Option(help="Recognizer type.")] = "dlib-resnet",
    split: Annotated[str, typer.Option(help="The manifest split to read.")] = "test",
    limit: Annotated[int, typer.Option(help="Crops to embed.", min=1)] = 512,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (dlib-resnet) [default: one per CPU].")
    ] = None,
    model_home: ModelHome = None,
) -> None:
    """Faces/s of a recognizer on prepared crops, and peak memory."""
    import time

    import numpy as np

    from m2f_bench.faces.align import CropGeometry
    from m2f_bench.recognition import build_recognizer
    from m2f_bench.training.data import PreparedSplit

    faces = PreparedSplit(prepared, split)
    loaded = [faces.load(i) for i in range(min(limit, len(faces)))]
    crops = np.stack([c for c, _ in loaded])
    landmarks = np.stack([lm for _, lm in loaded])
    spec: dict = {"type": recognizer}
    if workers is not None:
        spec["workers"] = workers
    model = build_recognizer(spec, _settings(None, model_home, False))
    geometry = CropGeometry(crops.shape[1])
    model.embed(crops[:2], geometry, landmarks[:2])  # warm-up (workers start, sessions load)
    start = time.perf_counter()
    model.embed(crops, geometry, landmarks)
    seconds = time.perf_counter() - start
    if hasattr(model, "close"):
        model.close()
    typer.echo(_machine_line())
    typer.echo(
        f"{recognizer} ({model.key}): {len(crops)} crops of {crops.shape[1]} px in "
        f"{seconds:.1f} s = {len(crops) / seconds:.1f} faces/s"
    )
    typer.echo(_peak_memory_line())


@app.command()
@cli_errors
def train(
    config: Annotated[Path, typer.Argument(help="Training config YAML file.")],
    out: Annotated[
        Path | None, typer.Option(help="Run folder [default: runs/<config name>].")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from its latest checkpoint.")
    ] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "auto",
    threads: Annotated[
        int | None,
        typer.Option(help="Intra-op CPU threads [default: torch's, one per core].", min=1),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train a learned inpainter (unet-gan, baseline-gan) or the mask segmenter (mask-unet)
    on a prepared face folder.

    Data-parallel (inpainters): torchrun --nproc-per-node N $(which m2f-bench) train ...
    """
    from m2f_bench.training.config import SegmenterConfig, load_config
    from m2f_bench.training.loop import train as run_train

    spec = load_config(config)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    out = out or Path("runs") / spec.name
    if isinstance(spec, SegmenterConfig):
        from m2f_bench.training.segmentation import train_segmenter

        result = train_segmenter(spec, out, resume=resume, device=device, progress=progress)
    else:
        result = run_train(spec, out, resume=resume, device=device, progress=progress)
    if result.checkpoint is None:  # a non-zero rank of a distributed job
        return
    what = "interrupted at" if result.stopped == "interrupted" else "finished at"
    torch = sys.modules.get("torch")
    peak = ""
    if torch is not None and torch.cuda.is_available() and torch.cuda.max_memory_allocated():
        peak = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
    typer.echo(
        f"{what} step {result.step} ({result.images_per_second:.1f} images/s{peak}); "
        f"checkpoint: {result.checkpoint}"
    )
    v = result.validation
    if "psnr" in v:
        typer.echo(f"validation: PSNR {v['psnr']:.2f} dB, SSIM {v['ssim']:.4f}")
    elif "iou" in v:
        typer.echo(
            f"validation: hole IoU {v['iou']:.4f} (degraded {v['iou_degraded']:.4f}), "
            f"false positives {100 * v['false_positive_rate']:.2f} %"
        )
    if result.stopped == "interrupted":
        typer.echo(f"resume with: m2f-bench train {config} --out {out} --resume")
        raise typer.Exit(130)  # as an interrupted command exits: a script can tell


@app.command()
@cli_errors
def unmask(
    photos: Annotated[
        list[Path], typer.Argument(help="Photos and/or folders of photos (searched recursively).")
    ],
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("unmasked"),
    model: Annotated[
        str,
        typer.Option(
            help="Inpainter: unet-gan-blind (finds the mask itself), or any other inpainter "
            "name (then --segmenter finds the mask)."
        ),
    ] = "unet-gan-blind",
    segmenter: Annotated[
        str | None, typer.Option(help="Segmenter for a non-blind --model [default: mask-unet].")
    ] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    min_face: Annotated[
        int, typer.Option(help="Smallest face (detector box side, photo px) to restore.", min=8)
    ] = 32,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Redo photos that already have results in --out.")
    ] = False,
    threads: Annotated[
        int, typer.Option(help="CPU threads for detection and the networks.", min=1)
    ] = 1,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    model_home: ModelHome = None,
    offline: Offline = False,
) -> None:
    """Remove face masks from real photos: every face is found, its mask segmented and
    inpainted, and the restored face pasted back into the photo.

    Writes NAME.unmasked.jpg|png, NAME.compare.jpg (before | after) and NAME.json (faces,
    mask found, hole coverage, timings) per photo into --out. A bad file gets one line and
    the batch goes on; photos already done are skipped (--overwrite redoes them).
    """
    import time

    import numpy as np

    from m2f_bench.unmask import Unmasker, unmask_files, writable_folder

    writable_folder(out)  # before the models load
    start = time.perf_counter()
    settings = _settings(None, model_home, offline)
    unmasker = Unmasker(
        settings, model, segmenter, device=device, min_face=min_face, threads=threads
    )
    load_seconds = time.perf_counter() - start

    def report(path: Path, message: str) -> None:
        typer.echo(f"{path}: {message}", err=True)

    summary = unmask_files(
        unmasker,
        photos,
        out,
        overwrite=overwrite,
        progress=progress,
        on_error=report,
        on_note=report,
    )
    per_photo = (
        f"; {1000 * float(np.median(summary.seconds)):.0f} ms per photo (median, with file "
        f"input/output; models loaded once in {load_seconds:.1f} s)"
        if summary.seconds
        else ""
    )
    typer.echo(
        f"{summary.done} of {summary.photos} photos unmasked into {out}, "
        f"{summary.skipped} already done, {len(summary.failed)} failed; "
        f"{summary.faces} faces ({summary.too_small} too small, no face in "
        f"{summary.no_face} photos), masks found on {summary.masks_found}{per_photo}"
    )
    if summary.failed and not summary.done and not summary.skipped:
        raise typer.Exit(1)


@app.command("export-onnx")
@cli_errors
def export_onnx(
    model: Annotated[
        str,
        typer.Argument(
            help="unet-gan / baseline-gan / unet-gan-blind (model card), weights file, model "
            "or run folder."
        ),
    ],
    out: Annotated[Path, typer.Argument(help="The .onnx file to write.")],
    size: Annotated[int, typer.Option(help="Crop side to trace and check at.", min=16)] = 128,
) -> None:
    """Export a trained generator to ONNX (checked against PyTorch within 1e-4)."""
    from m2f_bench.training.export import export_onnx as run_export
    from m2f_bench.training.export import is_blind

    error = run_export(model, out, size=size)
    typer.echo(f"{out}: max |ONNX - PyTorch| = {error:.1e}")
    if is_blind(model):
        typer.echo(
            "inputs: image (N×3×H×W RGB in [-1, 1]); outputs: output (restored, [-1, 1]), "
            "hole (the filled hole, 0/1), hole_probability"
        )
        return
    typer.echo(
        "evaluate it with: {type: onnx, model: " + str(out) + ", layout: nchw, "
        "image_range: [-1, 1], mask_value: 1}"
    )


@app.command("package-model")
@cli_errors
def package_model(
    run: Annotated[Path, typer.Argument(help="A training run folder.")],
    out: Annotated[
        Path, typer.Argument(help="Model folder to write, e.g. models/unet-gan-lfw128.")
    ],
    fp16: Annotated[bool, typer.Option(help="Store float16 weights (loaded as float32).")] = True,
    results: Annotated[
        Path | None,
        typer.Option(help="An evaluation's results.json: its test figures go in the card."),
    ] = None,
    command: Annotated[str | None, typer.Option(help="The training command, for the card.")] = None,
    notes: Annotated[str | None, typer.Option(help="Free text for the card.")] = None,
    best: Annotated[
        bool,
        typer.Option(
            "--best", help="Ship the best-validated generator (checkpoint.best), not the last."
        ),
    ] = False,
) -> None:
    """Ship a training run: weights, card.yaml (read by model lookup), config and README."""
    from m2f_bench.training.package import package_model as run_package

    card = run_package(
        run, out, fp16=fp16, results=results, command=command, notes=notes, best=best
    )
    size = (card.parent / "model.safetensors").stat().st_size / 2**20
    typer.echo(f"{card} written ({size:.1f} MiB of weights)")


@app.command("fit-gap")
@cli_errors
def fit_gap(
    models: Annotated[
        list[str],
        typer.Argument(
            help="unet-gan / baseline-gan / unet-gan-blind (model card), weights files, model "
            "or run folders."
        ),
    ],
    data: Annotated[
        Path,
        typer.Option(help="A `prepare` folder with the training and the held-out split."),
    ],
    limit: Annotated[int, typer.Option(help="Crops per split.", min=1)] = 512,
    seed: Annotated[int, typer.Option(help="Seed of the mask draws (the configs' seed).")] = 0,
    train_split: Annotated[str, typer.Option(help="The split the models trained on.")] = "train",
    val_split: Annotated[str, typer.Option(help="Its held-out identities.")] = "val",
    out: Annotated[Path | None, typer.Option(help="Also write the table as CSV.")] = None,
) -> None:
    """PSNR/SSIM of models on their own training faces and on held-out people.

    Both splits are masked as training's validation masks them (seeded, no augmentation)
    and scored with the evaluation's metric code. A large train − held-out gap means the
    model is limited by the number of training faces, not by its size or training time.
    """
    from m2f_bench.training.fitgap import fit_gap as run_fit_gap

    rows = []
    for row in run_fit_gap(
        models, data, limit=limit, seed=seed, train_split=train_split, val_split=val_split
    ):
        if not rows:
            typer.echo(
                f"{'model':40s} {'split':8s} {'images':>6s} {'PSNR':>7s} {'hole':>7s} {'SSIM':>7s}"
            )
        rows.append(row)
        typer.echo(
            f"{row.model:40s} {row.split:8s} {row.images:6d} {row.psnr:7.3f} "
            f"{row.psnr_hole:7.3f} {row.ssim:7.4f}"
        )
        if row.split == val_split:
            fitted = next(r for r in rows if r.model == row.model and r.split == train_split)
            typer.echo(
                f"{'':40s} {'gap':8s} {'':6s} {fitted.psnr - row.psnr:+7.3f} "
                f"{fitted.psnr_hole - row.psnr_hole:+7.3f} {fitted.ssim - row.ssim:+7.4f}"
            )
    if out is not None:
        import dataclasses

        import pandas as pd

        from m2f_bench._io import atomic_write_text

        table = pd.DataFrame([dataclasses.asdict(r) for r in rows])
        atomic_write_text(out, table.to_csv(index=False, float_format="%.4f"))
        typer.echo(f"{out} written")


@app.command("package-blind")
@cli_errors
def package_blind(
    generator: Annotated[Path, typer.Argument(help="A unet-gan model folder (package-model).")],
    segmenter: Annotated[Path, typer.Argument(help="A mask-unet model folder (package-model).")],
    out: Annotated[
        Path, typer.Argument(help="Model folder to write, e.g. models/unet-gan-blind-lfw128.")
    ],
    results: Annotated[
        Path | None,
        typer.Option(help="An evaluation's results.json: its unet-gan-blind rows go in the card."),
    ] = None,
    notes: Annotated[str | None, typer.Option(help="Free text for the card.")] = None,
) -> None:
    """Assemble unet-gan-blind from a generator and a segmenter model folder."""
    from m2f_bench.training.package import package_blind as run_package

    card = run_package(generator, segmenter, out, notes=notes, results=results)
    typer.echo(f"{card} written")


def main() -> None:  # pragma: no cover - console-script shim
    app()
