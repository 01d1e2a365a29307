"""An external program that inpaints a folder of images, such as a repository's predict script.

For each batch the masked crops are written to ``images/<index>.<format>`` and the holes to
``holes/<index>.png`` (0 outside, 255 inside) in a temporary folder; the program is run
once and must write ``output/<index>.<any image extension>`` for every image.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np

from m2f_bench._io import read_image, write_mask_png
from m2f_bench.errors import M2FError
from m2f_bench.inpainters.base import INPAINTERS, Inpainter

_FORMATS = ("png", "jpg")


@INPAINTERS.register("command")
class CommandInpainter(Inpainter):
    """Runs an external program on folders of masked images and hole masks.

    Args:
        command: The program and its arguments, as one string (split like a shell would,
            but run without one) or a list; ``{images}``, ``{holes}`` and ``{output}`` are
            replaced with the three folders' absolute paths.
        timeout: Seconds the program may run per batch (``None``: no limit).
        cwd: Folder to run it in (default: the current one).
        env: Extra environment variables.
        image_format: ``png`` or ``jpg`` for the images written; holes are always PNG.
    """

    name = "command"

    def __init__(
        self,
        command: str | list[str],
        timeout: float | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        image_format: str = "png",
    ) -> None:
        argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
        if not argv:
            raise M2FError(f"inpainter {self.name!r}: command is empty")
        if image_format not in _FORMATS:
            raise M2FError(
                f"inpainter {self.name!r}: image_format must be one of {', '.join(_FORMATS)}, "
                f"got {image_format!r}"
            )
        if cwd is not None and not Path(cwd).is_dir():
            raise M2FError(f"inpainter {self.name!r}: cwd {cwd} is not a folder")
        self.argv = argv
        self.timeout = timeout
        self.cwd = cwd
        # YAML turns `1` into an int; the environment only holds strings.
        self.env = {str(k): str(v) for k, v in (env or {}).items()}
        self.image_format = image_format

    def inpaint(self, images: np.ndarray, holes: np.ndarray) -> np.ndarray:
        with tempfile.TemporaryDirectory(prefix="m2f-inpaint-") as tmp:
            folders = {key: Path(tmp, key) for key in ("images", "holes", "output")}
            for folder in folders.values():
                folder.mkdir()
            stems = [f"{i:06d}" for i in range(len(images))]
            for stem, image, hole in zip(stems, images, holes, strict=True):
                path = folders["images"] / f"{stem}.{self.image_format}"
                if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
                    raise M2FError(f"inpainter {self.name!r}: cannot write {path}")
                write_mask_png(folders["holes"] / f"{stem}.png", hole)
            self._run(folders)
            return self._read_outputs(folders["output"], stems, images.shape[1:3])

    def _run(self, folders: Mapping[str, Path]) -> None:
        argv = [self._fill(arg, folders) for arg in self.argv]
        try:
            done = subprocess.run(
                argv,
                cwd=self.cwd,
                env={**os.environ, **self.env},
                timeout=self.timeout,
                capture_output=True,
                text=True,
                errors="replace",
            )
        except FileNotFoundError:
            raise M2FError(f"inpainter {self.name!r}: program not found: {argv[0]}") from None
        except subprocess.TimeoutExpired:
            raise M2FError(
                f"inpainter {self.name!r}: command timed out after {self.timeout} s"
            ) from None
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            last = lines[-1].strip() if lines else "(no stderr)"
            raise M2FError(
                f"inpainter {self.name!r}: command exited with code {done.returncode}: {last}"
            )

    @staticmethod
    def _fill(arg: str, folders: Mapping[str, Path]) -> str:
        # Plain replacement, not str.format: other braces in a command are the program's.
        for key, folder in folders.items():
            arg = arg.replace("{" + key + "}", str(folder))
        return arg

    def _read_outputs(self, output: Path, stems: list[str], size: tuple[int, int]) -> np.ndarray:
        # Matched by stem: predict scripts often write PNG whatever format they read.
        written = {path.stem: path for path in output.iterdir() if path.is_file()}
        missing = [stem for stem in stems if stem not in written]
        if missing:
            raise M2FError(
                f"inpainter {self.name!r}: command wrote no output for {len(missing)} of "
                f"{len(stems)} images (first: {missing[0]})"
            )
        out = np.empty((len(stems), *size, 3), np.uint8)
        for i, stem in enumerate(stems):
            image = read_image(written[stem])
            if image.shape[:2] != size:
                raise M2FError(
                    f"inpainter {self.name!r}: output {written[stem].name} is "
                    f"{image.shape[1]}×{image.shape[0]}, expected {size[1]}×{size[0]}"
                )
            out[i] = image
        return out
