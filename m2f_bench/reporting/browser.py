"""Screenshots of a report with headless Chromium, to check how a page looks.

Uses Debian's ``chromium`` package. Each run gets a fresh profile and every background
service Chromium would contact is turned off, so a screenshot touches no network and no
state of an earlier run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from m2f_bench._io import atomic_write_bytes
from m2f_bench.errors import M2FError

_CANDIDATES = ("chromium", "chromium-browser")


def find_chromium() -> str | None:
    """The Chromium executable: ``/usr/bin/chromium`` or one on PATH, else None."""
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return next((path for name in _CANDIDATES if (path := shutil.which(name))), None)


def screenshot(
    html: Path, png: Path, *, width: int = 1400, height: int = 2400, timeout: float = 120
) -> Path:
    """Render an HTML file in headless Chromium and save the top ``width``×``height`` px.

    Args:
        html: The page to render.
        png: Where to write the screenshot (atomically).
        width: Viewport width in CSS pixels (one device pixel each).
        height: Viewport height; the page below it is not captured.
        timeout: Seconds before Chromium is given up on.

    Returns:
        ``png``.

    Raises:
        M2FError: Chromium is not installed, fails, times out or writes no image.
    """
    html, png = Path(html).resolve(), Path(png)
    if not html.is_file():
        raise M2FError(f"no such HTML file: {html}")
    chromium = find_chromium()
    if chromium is None:
        raise M2FError("Chromium not found: install Debian's chromium package")
    with tempfile.TemporaryDirectory(prefix="m2f-chromium-") as tmp:
        shot = Path(tmp) / "shot.png"
        command = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={Path(tmp) / 'profile'}",
            "--hide-scrollbars",
            # Without it a HiDPI setting would scale the image past the requested size.
            "--force-device-scale-factor=1",
            f"--window-size={width},{height}",
            f"--screenshot={shot}",
            html.as_uri(),
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise M2FError(f"Chromium took over {timeout:.0f} s to screenshot {html}") from None
        if done.returncode != 0 or not shot.is_file():
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            reason = lines[-1].strip() if lines else f"exit status {done.returncode}"
            raise M2FError(f"Chromium could not screenshot {html}: {reason}")
        atomic_write_bytes(png, shot.read_bytes())
    return png
