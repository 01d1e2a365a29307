"""Protocol files: YAML mapped key by key onto a frozen, validated schema.

A protocol says what an evaluation runs — dataset and split, crop size, masks, the
inpainters, recognizers, metrics and verification scenarios, report options — and the
runner runs exactly that. Unknown keys and bad values are rejected with the key's path.
Strings may use ``${VAR}`` or ``${VAR:-default}`` to take values from the environment.
"""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from m2f_bench.errors import M2FError

PROTOCOL_VERSION = 1
SCENARIOS = (
    "clean-clean",
    "masked-clean",
    "inpainted-clean",
    "masked-masked",
    "inpainted-inpainted",
)
Scenario = Literal[
    "clean-clean", "masked-clean", "inpainted-clean", "masked-masked", "inpainted-inpainted"
]


class ProtocolError(M2FError):
    """A protocol file is missing, malformed or invalid."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Plugin(BaseModel):
    """``type:`` names a registered class; the other keys are its arguments."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str
    name: str | None = None

    @property
    def args(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @property
    def label(self) -> str:
        return self.name or self.type

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str | None) -> str | None:
        # The name becomes a folder and a column name.
        return value if value is None else safe_name(value)

    @field_validator("type")
    @classmethod
    def _safe_type(cls, value: str) -> str:
        return safe_name(value)

    def spec(self) -> dict[str, Any]:
        """``{"type": ..., **args}`` (plus ``name`` when set), for the factories."""
        out: dict[str, Any] = {"type": self.type, **self.args}
        if self.name:
            out["name"] = self.name
        return out


class DatasetSpec(_Strict):
    name: str
    split: Literal["test", "train", "all"] = "test"
    root: Path | None = None
    limit_pairs: int | None = Field(None, ge=2, description="seeded subset of the pairs")
    limit_images: int | None = Field(None, ge=1, description="seeded subset (no pairs)")
    seed: int = 0
    options: dict[str, Any] = Field(default_factory=dict)


class FacesSpec(_Strict):
    size: int = Field(128, ge=32, le=2048)
    detector: Literal["auto", "scrfd", "dlib-hog"] = "auto"
    det_size: int | None = Field(None, ge=64, le=1280, multiple_of=32)


class MasksSpec(_Strict):
    types: tuple[str, ...] | None = Field(None, min_length=1)
    seed: int = 0


class VerificationSpec(_Strict):
    scenarios: tuple[Scenario, ...] = SCENARIOS
    fars: tuple[float, ...] = (1e-3, 1e-2)
    bootstrap: int = Field(1000, ge=1, description="resamples for the 95 % intervals")
    seed: int = 0

    @field_validator("fars")
    @classmethod
    def _fars_in_range(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        for far in value:
            if not 0 < far < 1:
                raise ValueError(f"false accept rate {far} must be between 0 and 1")
        return value


class IdentificationSpec(_Strict):
    """Real-mask protocols: masked probes against a gallery of one clean photo per person."""

    ranks: tuple[int, ...] = Field((1, 5), min_length=1)
    gallery_seed: int = Field(0, description="which clean photo of each person is the gallery")
    impostors_per_probe: int = Field(
        1, ge=1, description="verification: each probe against this many other galleries"
    )

    @field_validator("ranks")
    @classmethod
    def _positive(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(r < 1 for r in value):
            raise ValueError("ranks must be ≥ 1")
        return tuple(sorted(set(value)))


class ReportSpec(_Strict):
    title: str | None = None
    samples: int = Field(8, ge=0, le=100)
    coverage_bins: tuple[float, ...] = (0.0, 0.2, 0.25, 0.3, 0.35, 1.0)

    @field_validator("coverage_bins")
    @classmethod
    def _increasing(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if len(value) < 2 or any(b <= a for a, b in itertools.pairwise(value)):
            raise ValueError("coverage bins must be at least two increasing edges")
        return value


class Protocol(_Strict):
    """A whole protocol file."""

    version: Literal[1]
    name: str
    description: str = ""
    dataset: DatasetSpec
    faces: FacesSpec = FacesSpec()
    masks: MasksSpec = MasksSpec()
    inpainters: tuple[_Plugin, ...] = Field(min_length=1)
    recognizers: tuple[_Plugin, ...] = ()
    metrics: tuple[str, ...] = ("psnr", "ssim", "psnr_hole", "ssim_hole", "l1_hole")
    verification: VerificationSpec | None = VerificationSpec()
    identification: IdentificationSpec | None = Field(
        None, description="real-mask datasets only (default: ranks 1 and 5)"
    )
    report: ReportSpec = ReportSpec()

    @field_validator("name")
    @classmethod
    def _folder_name(cls, value: str) -> str:
        # The default output folder is runs/<name>: no path, no "..".
        return safe_name(value)

    @field_validator("inpainters", "recognizers")
    @classmethod
    def _unique_labels(cls, value: tuple[_Plugin, ...]) -> tuple[_Plugin, ...]:
        labels = [p.label for p in value]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"names must be unique (give each a `name:`): {', '.join(dupes)}")
        return value


_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def safe_name(value: str) -> str:
    """A name that can be a folder name: letters, digits, '.', '_', '-', not starting with
    '.', '_' or '-'; anything else is a ValueError (pydantic reports it with its key)."""
    if not _SAFE_NAME.match(value):
        raise ValueError(f"{value!r} must be letters, digits, '.', '_' or '-'")
    return value


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: Any, path: str = "") -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string of a loaded YAML tree.

    Raises:
        ProtocolError: A variable is unset and has no default; the message gives its key.
    """
    if isinstance(value, dict):
        return {k: expand_env(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, f"{path}.{i}") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise ProtocolError(f"{path or '<root>'}: environment variable {name} is not set")

    expanded = _ENV.sub(substitute, value)
    if expanded != value and _ENV.fullmatch(value):
        # A whole-value substitution may stand for a number or nothing (null); anything
        # else stays the string it is (no dates, no yes/no booleans, no YAML syntax).
        if not expanded.strip():
            return None
        for kind in (int, float):
            try:
                return kind(expanded)
            except ValueError:
                pass
    return expanded


def _format_errors(source: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "<root>"
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        parts.append(f"{where}: {message}")
    return f"{source}: " + "; ".join(parts)


def parse_protocol(data: Any, source: str = "<protocol>") -> Protocol:
    """Validate an already-loaded mapping.

    Raises:
        ProtocolError: One line listing each bad key by its path.
    """
    if not isinstance(data, dict):
        raise ProtocolError(f"{source}: a protocol must be a mapping of keys")
    if "version" not in data:
        raise ProtocolError(f"{source}: version: missing (this m2f-bench reads version 1)")
    if type(data["version"]) is not int or data["version"] != PROTOCOL_VERSION:
        raise ProtocolError(
            f"{source}: version: {data['version']!r} is not supported (this m2f-bench "
            f"reads version {PROTOCOL_VERSION})"
        )
    try:
        return Protocol.model_validate(expand_env(data))
    except ValidationError as exc:
        raise ProtocolError(_format_errors(source, exc)) from None


def load_protocol(path: str | os.PathLike) -> Protocol:
    """Read and validate a protocol file.

    Raises:
        ProtocolError: Missing file, YAML syntax error, or invalid content.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProtocolError(f"protocol file not found: {path}") from None
    except OSError as exc:
        raise ProtocolError(f"cannot read {path}: {exc}") from None
    except UnicodeDecodeError:
        raise ProtocolError(f"cannot read {path}: not a text file (invalid UTF-8)") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProtocolError(f"{path}: YAML syntax error{yaml_problem(exc)}") from None
    return parse_protocol(data, str(path))


def yaml_problem(exc: yaml.YAMLError) -> str:
    """Where and what a YAML syntax error is, in one line: `` (line L, column C): problem``."""
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    return f"{where}: {getattr(exc, 'problem', None) or 'invalid YAML'}"
