"""`prepare` never dies on one face: degenerate geometry, failing steps, interruptions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from m2f_bench.data.base import FaceRecord
from m2f_bench.faces.pipeline import AlignerConfig
from m2f_bench.masks import MASK_TYPES, apply_mask
from m2f_bench.prepare import runner as prepare_runner
from m2f_bench.prepare.runner import PrepareConfig, prepare

TYPES = ("surgical_blue", "fitted")


def profile_landmarks(size: int = 128) -> np.ndarray:
    """A ¾-profile face whose far cheek contour runs over the nose tip.

    This is the configuration that made masks v1 divide by zero: jaw point 12 sits exactly
    on landmark 30, so the direction from the nose tip to it has no length, and the far
    jaw points collapse onto one another.
    """
    s = size / 128
    points = np.zeros((68, 2))
    # Near (left) side wide, far side squeezed behind the nose.
    jaw_x = [28, 29, 31, 34, 38, 44, 52, 60, 68, 74, 77, 78, 78, 78, 78, 78, 78]
    jaw_y = [50, 58, 66, 74, 82, 89, 94, 97, 98, 95, 88, 80, 72, 66, 60, 54, 48]
    points[:17] = np.stack([jaw_x, jaw_y], 1)
    points[17:27] = np.stack([np.linspace(34, 80, 10), np.full(10, 40.0)], 1)
    points[27:31] = [[70, 50], [73, 57], [76, 64], [78, 72]]
    points[31:36] = [[66, 76], [70, 77], [73, 78], [76, 77], [78, 76]]
    points[36:42] = [[40, 52], [45, 49], [50, 49], [55, 52], [50, 54], [45, 54]]
    points[42:48] = [[70, 52], [73, 50], [76, 50], [78, 52], [76, 53], [73, 53]]
    mouth = np.stack([np.linspace(56, 78, 12), 86 + 3 * np.sin(np.linspace(0, 2 * np.pi, 12))], 1)
    points[48:60] = mouth
    points[60:68] = mouth[::3].repeat(2, 0)[:8]
    points[12] = points[30]  # the far jaw point lands on the nose tip
    return points * s


@pytest.mark.parametrize("mask_type", MASK_TYPES)
def test_profile_face_that_produced_nan_gets_a_mask(mask_type: str) -> None:
    points = profile_landmarks()
    crop = np.full((128, 128, 3), 150, np.uint8)
    with np.errstate(divide="raise", invalid="raise"):  # any NaN or division by zero fails
        masked = apply_mask(crop, points, mask_type, image_id="profile")
    assert 0.05 < masked.coverage < 0.6
    np.testing.assert_array_equal(masked.image[~masked.hole], crop[~masked.hole])
    # The nose tip and the mouth are under the mask even on the far side.
    for index in (30, 33, 51, 57):
        x, y = np.round(points[index]).astype(int)
        assert masked.hole[y, x], index


def test_collapsed_landmarks_fail_with_one_line() -> None:
    from m2f_bench.errors import M2FError

    points = profile_landmarks()
    points[:] = points[27] + np.array([0.0, 1.0]) * np.linspace(0, 30, 68)[:, None]
    with pytest.raises(M2FError) as error:
        apply_mask(np.zeros((128, 128, 3), np.uint8), points, "surgical_blue", image_id="x")
    assert "\n" not in str(error.value)


@pytest.fixture
def photos(tmp_path, astronaut) -> list[FaceRecord]:
    folder = tmp_path / "photos"
    folder.mkdir()
    records = []
    for i in range(5):
        path = folder / f"p{i}.jpg"
        # Each a slightly different photo, so that the run does real work per image.
        Image.fromarray(np.roll(astronaut, 3 * i, axis=1)).save(path, quality=90)
        records.append(FaceRecord(f"p{i}", "eileen", path, 1, "test"))
    corrupt = folder / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff not a jpeg")
    records.append(FaceRecord("corrupt", "eileen", corrupt, 1, "test"))
    return records


def _config() -> PrepareConfig:
    aligner = AlignerConfig(size=64, scrfd_path=None, use_hog=True)
    return PrepareConfig("test", "", aligner, TYPES, seed=0)


def _manifest(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "manifest.csv", keep_default_na=False)


def test_a_mask_type_that_raises_is_a_failed_row(photos, tmp_path, monkeypatch) -> None:
    real = apply_mask

    def flaky(crop, landmarks, mask_type, *, image_id, seed=0):
        if mask_type == "fitted" and image_id == "p2":
            raise ValueError("cannot convert float NaN to integer")
        return real(crop, landmarks, mask_type, image_id=image_id, seed=seed)

    monkeypatch.setattr("m2f_bench.masks.apply_mask", flaky)
    out = tmp_path / "out"
    summary = prepare(photos, _config(), out, progress=False)

    manifest = _manifest(out).set_index(["image_id", "mask_type"])
    row = manifest.loc[("p2", "fitted")]
    assert row.status == "failed"
    assert row.reason == "mask fitted: ValueError: cannot convert float NaN to integer"
    assert manifest.loc[("p2", "surgical_blue")].status == "ok"
    assert (out / "masked" / "surgical_blue" / "p2.png").is_file()
    ok = manifest[manifest.status == "ok"]
    assert len(ok) == 2 * 5 - 1  # every other (image, type) of the faces
    corrupt = manifest.loc[("corrupt", "")]
    assert corrupt.status == "failed" and corrupt.reason.startswith("BadImageError")
    info = json.loads((out / "prepare.json").read_text())
    assert info["mask_failures_by_type"] == {"fitted": 1}
    assert summary.n_ok == 5 and summary.n_failed == 1

    # The failed type counts as done: a rerun redoes nothing.
    again = prepare(photos, _config(), out, progress=False)
    assert again.n_reused == len(photos)


def test_any_exception_in_a_step_is_a_failed_row(photos, tmp_path, monkeypatch) -> None:
    real = prepare_runner.read_image

    def broken(path):
        if Path(path).name == "p1.jpg":
            raise RuntimeError("decoder crashed")
        return real(path)

    monkeypatch.setattr(prepare_runner, "read_image", broken)
    out = tmp_path / "out"
    prepare(photos, _config(), out, progress=False)
    manifest = _manifest(out).set_index("image_id")
    assert manifest.loc["p1"].status == "failed"
    assert manifest.loc["p1"].reason == "RuntimeError: decoder crashed"
    assert (manifest.loc[["p0", "p3"]].status == "ok").all()


def test_interrupted_run_keeps_every_finished_row(photos, tmp_path, monkeypatch) -> None:
    real_call = prepare_runner._Worker.__call__
    calls = []

    def interrupt_at_fourth(self, item):
        calls.append(item[0].image_id)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_call(self, item)

    monkeypatch.setattr(prepare_runner._Worker, "__call__", interrupt_at_fourth)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        prepare(photos, _config(), out, progress=False)

    manifest = _manifest(out)
    assert sorted(set(manifest.image_id)) == ["p0", "p1", "p2"]
    assert (manifest.status == "ok").all() and len(manifest) == 3 * len(TYPES)
    info = json.loads((out / "prepare.json").read_text())
    assert info["interrupted"] is True
    assert info["n_ok"] == 3 and info["n_pending"] == len(photos) - 3

    monkeypatch.setattr(prepare_runner._Worker, "__call__", real_call)
    resumed = prepare(photos, _config(), out, progress=False)
    assert resumed.n_reused == 3 and resumed.n_pending == 0
    assert set(_manifest(out).image_id) == {r.image_id for r in photos}


def test_interrupted_run_with_workers_keeps_rows_finished_out_of_order(
    photos, tmp_path, monkeypatch
) -> None:
    out = tmp_path / "out"
    prepare(photos[:3], _config(), out, progress=False)  # three images already done
    real_imap_results = prepare_runner._Worker.load_done

    # Stop the run as soon as it starts: only what is on disk can be listed.
    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_runner, "_progress", lambda total, enabled: _StopBar())
    with pytest.raises(KeyboardInterrupt):
        prepare(photos, _config(), out, progress=False)
    assert real_imap_results is prepare_runner._Worker.load_done
    assert set(_manifest(out).image_id) == {"p0", "p1", "p2"}


class _StopBar:
    """A progress bar that interrupts the run at its first update."""

    def update(self, n: int = 1) -> None:
        raise KeyboardInterrupt

    def close(self) -> None:
        pass
