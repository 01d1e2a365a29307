from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from m2f_bench._io import (
    atomic_write_bytes,
    read_image,
    read_mask_png,
    write_mask_png,
    write_png,
)
from m2f_bench.errors import BadImageError


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    target = tmp_path / "sub" / "file.bin"
    atomic_write_bytes(target, b"abc")
    atomic_write_bytes(target, b"defg")
    assert target.read_bytes() == b"defg"
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]


def test_png_round_trip_is_lossless(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)
    write_png(tmp_path / "x.png", rgb)
    assert np.array_equal(read_image(tmp_path / "x.png"), rgb)
    hole = rng.random((17, 23)) > 0.5
    write_mask_png(tmp_path / "h.png", hole)
    assert np.array_equal(read_mask_png(tmp_path / "h.png"), hole)


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [
        ("L", 200, (200, 200, 200)),
        ("I;16", 65535, (255, 255, 255)),
        ("RGBA", (10, 20, 30, 255), (10, 20, 30)),
    ],
)
def test_read_image_converts_layouts_to_rgb8(tmp_path, mode, value, expected):
    path = tmp_path / f"img_{mode.replace(';', '')}.png"
    Image.new(mode, (8, 6), value).save(path)
    rgb = read_image(path)
    assert rgb.shape == (6, 8, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == expected


def test_transparent_pixels_become_white(tmp_path):
    path = tmp_path / "clear.png"
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(path)
    assert tuple(read_image(path)[0, 0]) == (255, 255, 255)


def test_corrupt_and_truncated_files_raise_bad_image(tmp_path, astronaut):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(BadImageError, match="not an image"):
        read_image(junk)
    full = tmp_path / "full.jpg"
    Image.fromarray(astronaut).save(full, quality=90)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(full.read_bytes()[:4000])
    with pytest.raises(BadImageError, match="truncated"):
        read_image(cut)
    with pytest.raises(BadImageError, match="not found"):
        read_image(tmp_path / "missing.jpg")


def test_progress_without_a_terminal_is_a_few_plain_lines():
    import io

    from m2f_bench._progress import PlainProgress

    stream = io.StringIO()
    bar = PlainProgress(1000, "prepare", stream=stream)
    for _ in range(1000):
        bar.update()
    bar.write("a result line")
    bar.close()
    bar.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    # A line at each tenth (10 %…90 %), the caller's line, then one final line.
    assert len(lines) == 11, lines
    assert lines[0].startswith("prepare: 100/1000 img (10 %)") and "ETA" in lines[0]
    assert lines[-2] == "a result line"
    assert lines[-1].startswith("prepare: 1000/1000 img (100 %) in")


def test_safetensors_files_have_the_same_bytes_in_every_process(tmp_path):
    """safetensors orders metadata keys by a per-process hash; the written file must not
    depend on it (its sha256 is the weights' fingerprint in cards and caches)."""
    import hashlib
    import subprocess
    import sys

    pytest.importorskip("torch")
    script = (
        "import sys, torch\n"
        "from m2f_bench._io import write_safetensors\n"
        "meta = {k: k * 3 for k in ('format', 'inpainter', 'arch_args', 'b', 'zeta', 'a')}\n"
        "t = {'w': torch.arange(6.0).reshape(2, 3), 'b': torch.ones(5, dtype=torch.float16)}\n"
        "write_safetensors(sys.argv[1], t, meta)\n"
    )
    digests = set()
    for i in range(3):
        path = tmp_path / f"{i}.safetensors"
        subprocess.run([sys.executable, "-c", script, str(path)], check=True)
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(digests) == 1
    from safetensors import safe_open

    with safe_open(str(tmp_path / "0.safetensors"), "pt") as fh:
        assert fh.metadata()["zeta"] == "zetazetazeta"
        assert fh.get_tensor("w").tolist() == [[0, 1, 2], [3, 4, 5]]
