"""`m2f-bench unmask` on real photos: every face, paste-back, and bad input per file."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from m2f_bench.cli.main import app
from m2f_bench.masks import apply_mask

runner = CliRunner()


@pytest.fixture(scope="module")
def unmasker(model_home):
    from m2f_bench.settings import Settings
    from m2f_bench.unmask import Unmasker

    return Unmasker(Settings(data_home=model_home, model_home=model_home, offline=True))


@pytest.fixture(scope="module")
def masked_photo(astronaut, hog_aligner):
    """The astronaut photo wearing a synthetic surgical mask, drawn into the photo itself
    (through the inverse of the crop's alignment), and where its mask is."""
    from m2f_bench.masks.paint import paint_mask

    face = hog_aligner.align(astronaut)
    photo = paint_mask(astronaut, face, "surgical_blue", "a", 0)
    masked = apply_mask(face.crop, face.landmarks, "surgical_blue", image_id="a", seed=0)
    inverse = cv2.invertAffineTransform(face.matrix)
    size = (astronaut.shape[1], astronaut.shape[0])
    where = cv2.warpAffine(masked.hole.astype(np.uint8), inverse, size, flags=cv2.INTER_NEAREST) > 0
    return photo, where


def test_a_masked_face_is_restored_in_place_and_the_rest_is_untouched(
    unmasker, masked_photo, astronaut
):
    photo, where = masked_photo
    result = unmasker.unmask(photo)
    assert [f.status for f in result.faces] == ["restored"]
    face = result.faces[0]
    assert face.mask_found and 0.1 < face.hole_coverage < 0.5
    changed = np.any(result.image != photo, axis=2)
    # Changes stay at the mask (its rim feathered), never far from it: here 1 crop pixel
    # is 1.43 photo pixels, and the blend reaches at most ~12 crop pixels past the hole.
    distance = cv2.distanceTransform((~where).astype(np.uint8), cv2.DIST_L2, 5)
    assert changed[where].mean() > 0.9 and distance[changed].max() < 20
    # The restoration is closer to the real face than the mask was.
    err_before = np.abs(photo[where].astype(int) - astronaut[where]).mean()
    err_after = np.abs(result.image[where].astype(int) - astronaut[where]).mean()
    assert err_after < 0.7 * err_before  # 32 vs 53 grey levels with the shipped models
    assert set(result.timings_ms) >= {"detect", "segment", "inpaint", "paste", "total"}


def test_a_face_without_a_mask_is_left_exactly_as_it_was(unmasker, astronaut):
    result = unmasker.unmask(astronaut)
    assert [f.status for f in result.faces] == ["no mask"]
    assert np.array_equal(result.image, astronaut)


def test_every_face_of_a_group_photo_is_restored(unmasker, masked_photo, astronaut):
    photo, _ = masked_photo
    group = np.concatenate([photo, astronaut, photo], axis=1)
    result = unmasker.unmask(group)
    statuses = sorted((f.box[0], f.status) for f in result.faces)
    assert [s for _, s in statuses] == ["restored", "no mask", "restored"]


def test_a_grey_photo_stays_grey(unmasker, masked_photo):
    grey = cv2.cvtColor(masked_photo[0], cv2.COLOR_RGB2GRAY)
    photo = np.repeat(grey[..., None], 3, axis=2)
    result = unmasker.unmask(photo)
    assert result.faces[0].status == "restored"
    assert np.array_equal(result.image[..., 0], result.image[..., 1])
    assert np.array_equal(result.image[..., 1], result.image[..., 2])


def test_a_batch_writes_outputs_reports_bad_files_and_resumes(unmasker, masked_photo, tmp_path):
    from m2f_bench.unmask import unmask_files

    photo, _ = masked_photo
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    Image.fromarray(photo).save(inputs / "masked.jpg", quality=95)
    # EXIF orientation 6 (rotate 90° clockwise to view): stored on its side.
    sideways = Image.fromarray(np.ascontiguousarray(np.rot90(photo, 1)))
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways.save(inputs / "sub" / "rotated.jpg", exif=exif, quality=95)
    rgba = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])
    rgba[:20, :20, 3] = 0
    Image.fromarray(rgba, "RGBA").save(inputs / "alpha.png")
    (inputs / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (inputs / "notes.txt").write_text("not an image")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(inputs / "tiny.png")
    Image.fromarray(np.full((300, 400, 3), 128, np.uint8)).save(inputs / "noface.png")
    out = tmp_path / "out"
    errors, notes = [], []
    summary = unmask_files(
        unmasker,
        [inputs],
        out,
        progress=False,
        on_error=lambda p, m: errors.append((p.name, m)),
        on_note=lambda p, m: notes.append((p.name, m)),
    )
    assert sorted(n for n, _ in errors) == ["corrupt.jpg", "notes.txt"]
    assert all("\n" not in m and m for _, m in errors)
    assert summary.done == 5 and summary.masks_found == 3 and summary.no_face == 2
    assert sorted(notes) == [
        ("noface.png", "no face found; left as it is"),
        ("tiny.png", "no face found; left as it is"),
    ]
    record = json.loads((out / "sub" / "rotated.json").read_text())
    assert record["size"] == [photo.shape[1], photo.shape[0]]  # upright after EXIF
    assert [f["status"] for f in record["faces"]] == ["restored"]
    assert (out / "sub" / "rotated.unmasked.jpg").is_file() and (
        out / "alpha.unmasked.png"
    ).is_file()
    compare = cv2.imread(str(out / "masked.compare.jpg"))
    assert compare.shape[1] == 2 * photo.shape[1] + 8
    assert json.loads((out / "noface.json").read_text())["faces"] == []
    # A rerun skips what is done; --overwrite redoes it.
    again = unmask_files(unmasker, [inputs], out, progress=False)
    assert again.skipped == 5 and again.done == 0
    redo = unmask_files(unmasker, [inputs / "masked.jpg"], out, overwrite=True, progress=False)
    assert redo.done == 1
    # A changed photo, or a missing output, is done again.
    Image.fromarray(photo[:, ::-1].copy()).save(inputs / "masked.jpg", quality=95)
    (out / "alpha.compare.jpg").unlink()
    third = unmask_files(unmasker, [inputs], out, progress=False)
    assert third.done == 2 and third.skipped == 3


def test_outputs_never_collide_and_the_output_folder_is_not_read_back(
    unmasker, masked_photo, tmp_path
):
    from m2f_bench.unmask import unmask_files

    photo, _ = masked_photo
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.fromarray(photo).save(tmp_path / "a" / "x.jpg")
    Image.fromarray(photo).save(tmp_path / "a" / "x.png")
    Image.fromarray(photo).save(tmp_path / "b" / "x.jpg")
    out = tmp_path / "a" / "unmasked"  # inside the folder being read
    inputs = [tmp_path / "a", tmp_path / "b" / "x.jpg"]
    summary = unmask_files(unmasker, inputs, out, progress=False)
    assert summary.done == 3 and summary.skipped == 0
    records = sorted(p.name for p in out.glob("*.json"))
    assert records == ["x.jpg-2.json", "x.jpg.json", "x.png.json"]
    # A second run over the same folder does not take last run's outputs for photos.
    again = unmask_files(unmasker, inputs, out, progress=False)
    assert again.photos == 3 and again.skipped == 3


def test_changed_settings_redo_a_photo(model_home, masked_photo, tmp_path):
    from m2f_bench.settings import Settings
    from m2f_bench.unmask import Unmasker, unmask_files

    settings = Settings(data_home=model_home, model_home=model_home)
    Image.fromarray(masked_photo[0]).save(tmp_path / "p.png")
    out = tmp_path / "o"
    assert unmask_files(Unmasker(settings), [tmp_path / "p.png"], out, progress=False).done == 1
    notes = []
    strict = Unmasker(settings, min_face=10_000)
    summary = unmask_files(
        strict, [tmp_path / "p.png"], out, progress=False, on_note=lambda p, m: notes.append(m)
    )
    assert summary.done == 1
    assert notes == ["1 of 1 faces smaller than 10000 px (detector box); left as they are"]
    record = json.loads((out / "p.json").read_text())
    assert [f["status"] for f in record["faces"]] == ["too small"]


def test_a_huge_photo_is_refused_with_one_line(unmasker, monkeypatch):
    import m2f_bench.unmask as module
    from m2f_bench.errors import BadImageError

    monkeypatch.setattr(module, "MAX_PIXELS", 100_000)
    with pytest.raises(BadImageError, match=r"photo too large .* the limit is"):
        unmasker.unmask(np.zeros((400, 400, 3), np.uint8))


def test_small_faces_are_reported_not_restored(model_home, masked_photo):
    from m2f_bench.settings import Settings
    from m2f_bench.unmask import Unmasker

    strict = Unmasker(Settings(data_home=model_home, model_home=model_home), min_face=10_000)
    result = strict.unmask(masked_photo[0])
    assert [f.status for f in result.faces] == ["too small"]
    assert np.array_equal(result.image, masked_photo[0])


def test_cli_unmask_prints_a_summary_and_one_line_per_bad_file(
    model_home, masked_photo, tmp_path, monkeypatch
):
    monkeypatch.setenv("M2F_MODEL_HOME", str(model_home))
    Image.fromarray(masked_photo[0]).save(tmp_path / "a.png")
    (tmp_path / "b.jpg").write_bytes(b"garbage")
    result = runner.invoke(
        app,
        [
            "unmask",
            str(tmp_path / "a.png"),
            str(tmp_path / "b.jpg"),
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "1 of 2 photos unmasked" in result.output and "masks found on 1" in result.output
    assert "b.jpg: " in result.output
    # Any other inpainter works with the segmenter finding the hole.
    result = runner.invoke(
        app,
        [
            "unmask",
            str(tmp_path / "a.png"),
            "--out",
            str(tmp_path / "t"),
            "--model",
            "opencv-telea",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "t" / "a.json").read_text())
    assert record["faces"][0]["status"] == "restored"
    assert record["model"]["inpainter"] == {"type": "opencv-telea"}
