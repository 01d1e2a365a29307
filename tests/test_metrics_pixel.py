from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from m2f_bench.errors import M2FError
from m2f_bench.metrics import METRICS, aggregate, pixel
from m2f_bench.metrics.pixel import (
    L1_HOLE,
    PSNR,
    SSIM,
    SSIM_BORDER,
    SSIM_HOLE,
    compute_metrics,
    l1_hole,
    psnr,
    psnr_hole,
    ssim,
    ssim_hole,
    ssim_map,
    ssim_whole_and_hole,
)

SKIMAGE_SSIM = dict(
    data_range=255, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
)


def random_batch(seed: int, shape=(3, 32, 40, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def structured_batch(astronaut: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Face crops of a real photo, and degraded versions (noise, shift, flat patch)."""
    reference = np.stack([astronaut[30:78, 170:226], astronaut[60:108, 180:236]])
    rng = np.random.default_rng(1)
    noisy = np.clip(reference + rng.normal(0, 12, reference.shape), 0, 255).astype(np.uint8)
    restored = noisy.copy()
    restored[0] = np.roll(reference[0], 2, axis=1)
    restored[1, 10:30, 12:40] = 128
    return restored, reference


def skimage_ssim(restored: np.ndarray, reference: np.ndarray) -> tuple[float, np.ndarray]:
    return structural_similarity(reference, restored, full=True, **SKIMAGE_SSIM)


@pytest.mark.parametrize("case", ["random", "structured"])
def test_psnr_ssim_and_map_equal_scikit_image(case, astronaut):
    if case == "random":
        restored, reference = random_batch(0), random_batch(1)
    else:
        restored, reference = structured_batch(astronaut)
    ours_psnr, ours_ssim = psnr(restored, reference), ssim(restored, reference)
    ours_map = ssim_map(restored, reference)
    assert ours_map.shape == restored.shape
    for i in range(len(restored)):
        want_psnr = peak_signal_noise_ratio(reference[i], restored[i], data_range=255)
        want_ssim, want_map = skimage_ssim(restored[i], reference[i])
        assert ours_psnr[i] == pytest.approx(want_psnr, abs=1e-6)
        assert ours_ssim[i] == pytest.approx(want_ssim, abs=1e-6)
        np.testing.assert_allclose(ours_map[i], want_map, rtol=0, atol=1e-6)
    assert ours_ssim.min() < 0.95  # the degradations are visible, so the check has teeth


def test_ssim_hole_is_mean_of_scikit_image_map_over_hole_inside_border(astronaut):
    restored, reference = structured_batch(astronaut)
    holes = np.zeros(restored.shape[:3], dtype=bool)
    holes[:, 2:40, 8:30] = True  # reaches into the border strip, which must not count
    got = ssim_hole(restored, reference, holes)
    b = SSIM_BORDER
    for i in range(len(restored)):
        _, full = skimage_ssim(restored[i], reference[i])
        inside = np.zeros_like(holes[i])
        inside[b:-b, b:-b] = holes[i, b:-b, b:-b]
        assert got[i] == pytest.approx(full.mean(axis=-1)[inside].mean(), abs=1e-6)


def test_ssim_whole_and_hole_at_once_equal_the_two_functions_bit_for_bit(astronaut):
    restored, reference = structured_batch(astronaut)
    holes = np.zeros(restored.shape[:3], dtype=bool)
    holes[:, 20:50, 10:40] = True
    holes[1] = False  # an image without a hole: NaN for the hole value only
    whole, hole = ssim_whole_and_hole(restored, reference, holes)
    np.testing.assert_array_equal(whole, ssim(restored, reference))
    np.testing.assert_array_equal(hole, ssim_hole(restored, reference, holes))
    assert np.isnan(hole[1]) and not np.isnan(whole[1])
    # What the evaluation calls: every asked metric, in the order asked, same values.
    asked = [PSNR, SSIM_HOLE, L1_HOLE, SSIM]
    got = compute_metrics(asked, restored, reference, holes)
    assert list(got) == [m.name for m in asked]
    for metric in asked:
        np.testing.assert_array_equal(got[metric.name], metric(restored, reference, holes))


def test_hole_metrics_match_hand_computation_and_ignore_pixels_outside():
    rng = np.random.default_rng(3)
    reference = rng.integers(0, 200, (2, 24, 24, 3), dtype=np.uint8)
    holes = np.zeros((2, 24, 24), dtype=bool)
    holes[:, 6:18, 4:20] = True
    d = 7
    restored = reference.copy()
    restored[holes] += d

    assert psnr_hole(restored, reference, holes) == pytest.approx(
        [10 * math.log10(255**2 / d**2)] * 2, abs=1e-9
    )
    assert l1_hole(restored, reference, holes) == pytest.approx([d / 255] * 2, abs=1e-12)

    changed = restored.copy()
    changed[~holes] = rng.integers(0, 256, int((~holes).sum()) * 3).reshape(-1, 3)
    for metric in (psnr_hole, l1_hole):
        np.testing.assert_array_equal(
            metric(changed, reference, holes), metric(restored, reference, holes)
        )
    assert (psnr(changed, reference) < psnr(restored, reference)).all()


def test_l1_hole_counts_errors_in_both_directions_per_channel():
    reference = np.full((1, 12, 12, 3), 100, dtype=np.uint8)
    restored = reference.copy()
    restored[0, 0, 0] = (110, 90, 100)  # |errors| 10, 10, 0 on the single hole pixel
    holes = np.zeros((1, 12, 12), dtype=bool)
    holes[0, 0, 0] = True
    assert l1_hole(restored, reference, holes)[0] == pytest.approx(20 / 3 / 255)
    # MSE (100 + 100 + 0) / 3 over that pixel's channels
    assert psnr_hole(restored, reference, holes)[0] == pytest.approx(
        10 * math.log10(255**2 * 3 / 200)
    )


def test_identical_crops():
    images = random_batch(4, (2, 16, 16, 3))
    holes = np.ones((2, 16, 16), dtype=bool)
    assert np.isposinf(psnr(images, images)).all()
    assert np.isposinf(psnr_hole(images, images, holes)).all()
    np.testing.assert_allclose(ssim(images, images), 1.0, atol=1e-12)
    np.testing.assert_allclose(ssim_hole(images, images, holes), 1.0, atol=1e-12)
    np.testing.assert_array_equal(l1_hole(images, images, holes), 0.0)


def test_empty_hole_gives_nan():
    restored, reference = random_batch(5, (2, 16, 16, 3)), random_batch(6, (2, 16, 16, 3))
    holes = np.zeros((2, 16, 16), dtype=bool)
    holes[1, :SSIM_BORDER, :] = True  # only in the border strip: nothing for SSIM
    assert np.isnan(psnr_hole(restored, reference, holes)[0])
    assert np.isnan(l1_hole(restored, reference, holes)[0])
    assert np.isnan(ssim_hole(restored, reference, holes)).all()
    assert np.isfinite(psnr_hole(restored, reference, holes)[1])


def test_batches_larger_than_a_chunk_keep_image_order():
    n = pixel._CHUNK + 5
    restored, reference = random_batch(7, (n, 12, 12, 3)), random_batch(8, (n, 12, 12, 3))
    holes = np.random.default_rng(9).random((n, 12, 12)) < 0.5
    for metric in (psnr, ssim):
        whole = metric(restored, reference)
        single = [metric(restored[i : i + 1], reference[i : i + 1])[0] for i in range(n)]
        np.testing.assert_array_equal(whole, single)
    whole = ssim_hole(restored, reference, holes)
    single = [
        ssim_hole(restored[i : i + 1], reference[i : i + 1], holes[i : i + 1])[0] for i in range(n)
    ]
    np.testing.assert_array_equal(whole, single)


def test_registry_lists_the_five_metrics_with_flags_and_settings():
    assert {"psnr", "ssim", "psnr_hole", "ssim_hole", "l1_hole"} <= set(METRICS.names())
    flags = {name: METRICS.get(name).higher_is_better for name in pixel_names()}
    assert flags == {
        "psnr": True,
        "ssim": True,
        "psnr_hole": True,
        "ssim_hole": True,
        "l1_hole": False,
    }
    for name in ("ssim", "ssim_hole"):
        description = METRICS.get(name).description
        assert "Wang et al. 2004" in description and "σ = 1.5" in description


def pixel_names() -> list[str]:
    return ["psnr", "ssim", "psnr_hole", "ssim_hole", "l1_hole"]


@pytest.mark.parametrize("name", pixel_names())
def test_every_metric_returns_one_float_per_image(name):
    metric = METRICS.get(name)
    restored, reference = random_batch(10, (4, 16, 16, 3)), random_batch(11, (4, 16, 16, 3))
    holes = np.zeros((4, 16, 16), dtype=bool)
    holes[:, 5:11, 5:11] = True
    values = metric(restored, reference, holes)
    assert metric.name == name
    assert values.shape == (4,) and values.dtype == np.float64
    assert np.isfinite(values).all()


@pytest.mark.parametrize(
    ("restored", "reference", "holes", "match"),
    [
        (np.zeros((1, 16, 16, 3), np.uint8), np.zeros((1, 16, 17, 3), np.uint8), None, "differ"),
        (np.zeros((1, 16, 16, 3), np.float32), np.zeros((1, 16, 16, 3), np.uint8), None, "uint8"),
        (np.zeros((16, 16, 3), np.uint8), np.zeros((16, 16, 3), np.uint8), None, "N×H×W×3"),
        (
            np.zeros((1, 16, 16, 3), np.uint8),
            np.zeros((1, 16, 16, 3), np.uint8),
            np.zeros((1, 16, 16)),
            "bool",
        ),
        (
            np.zeros((1, 16, 16, 3), np.uint8),
            np.zeros((1, 16, 16, 3), np.uint8),
            np.zeros((1, 16, 15), bool),
            "holes must be",
        ),
    ],
)
def test_bad_inputs_raise_one_line_errors(restored, reference, holes, match):
    with pytest.raises(M2FError, match=match) as info:
        METRICS.get("psnr_hole")(restored, reference, holes)
    assert "\n" not in str(info.value)


def test_ssim_rejects_crops_smaller_than_the_window():
    images = np.zeros((1, 8, 32, 3), np.uint8)
    with pytest.raises(M2FError, match="at least 11×11"):
        ssim(images, images)


def test_aggregate_drops_nan_and_counts_inf():
    result = aggregate(np.array([1.0, 3.0, np.nan, np.inf]))
    assert result == {"mean": 2.0, "std": 1.0, "n": 2, "n_inf": 1}
    empty = aggregate(np.array([np.nan]))
    assert empty["n"] == 0 and math.isnan(empty["mean"])
