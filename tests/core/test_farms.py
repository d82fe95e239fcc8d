"""FARMS windows: their geometry against a brute-force count, and their pooled ESD against SVDs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from weightspectra.core.farms import MAX_WINDOWS, farms_eigenvalues, farms_windows
from weightspectra.errors import OptionError
from weightspectra.options import Precision

SHAPES = [(8, 2), (2, 8), (64, 16), (16, 64), (37, 11), (50, 50), (100, 30), (30, 7)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ratio", [1.0, 1.5, 2.0, 3.0])
@pytest.mark.parametrize("stride", [0.25, 0.5, 1.0])
def test_every_window_has_the_ratio_and_every_entry_is_covered(
    shape: tuple[int, int], ratio: float, stride: float
) -> None:
    rows, cols = shape
    long_side, short_side = max(shape), min(shape)
    if math.floor(long_side / ratio) < 2:
        with pytest.raises(OptionError, match="lower farms_ratio"):
            farms_windows(shape, ratio=ratio, stride=stride)
        return
    grid = farms_windows(shape, ratio=ratio, stride=stride)
    short = min(grid.rows, grid.cols)
    # the short side is the largest that fits: min(s, floor(L / ratio))
    assert short == min(short_side, math.floor(long_side / ratio))
    assert max(grid.rows, grid.cols) == max(short, round(ratio * short))
    if grid.rows != grid.cols and rows != cols:  # oriented like the matrix
        assert (grid.rows > grid.cols) == (rows > cols)
    covered = np.zeros(shape, dtype=int)
    for r, c in grid.slices():
        assert r.start >= 0 and r.stop <= rows and c.start >= 0 and c.stop <= cols
        assert (r.stop - r.start, c.stop - c.start) == (grid.rows, grid.cols)
        covered[r, c] += 1
    assert covered.min() >= 1
    # consecutive starts are one step apart except the last, aligned with the edge
    for size, win, starts in (
        (rows, grid.rows, grid.row_starts),
        (cols, grid.cols, grid.col_starts),
    ):
        step = max(1, round(stride * win))
        assert starts[0] == 0 and starts[-1] == size - win
        gaps = np.diff(starts)
        assert np.all(gaps[:-1] == step) and (gaps.size == 0 or 0 < gaps[-1] <= step)


def test_a_matrix_of_the_window_ratio_is_its_own_window() -> None:
    for shape, ratio in (((40, 40), 1.0), ((60, 30), 2.0), ((30, 60), 2.0)):
        grid = farms_windows(shape, ratio=ratio)
        assert grid.count == 1 and (grid.rows, grid.cols) == shape


def test_the_window_counts_of_a_tall_matrix() -> None:
    # 1536 × 384, square windows of 384, half overlap: starts 0, 192, ..., 1152 -> 7 windows
    grid = farms_windows((1536, 384))
    assert (grid.rows, grid.cols, grid.count) == (384, 384, 7)
    assert grid.row_starts == (0, 192, 384, 576, 768, 960, 1152)
    # side by side (stride 1): 4 windows; a smaller window tiles both axes
    assert farms_windows((1536, 384), stride=1.0).count == 4
    small = farms_windows((1536, 384), window=128, stride=1.0)
    assert (small.rows, small.cols, small.count) == (128, 128, 12 * 3)


def test_bad_geometry_is_refused_with_the_fix() -> None:
    with pytest.raises(OptionError, match="ratio must be ≥ 1"):
        farms_windows((10, 5), ratio=0.5)
    with pytest.raises(OptionError, match=r"stride must be in \(0, 1\]"):
        farms_windows((10, 5), stride=0.0)
    with pytest.raises(OptionError, match="at least 2"):
        farms_windows((10, 5), window=1)
    with pytest.raises(OptionError, match="raise farms_window or farms_stride"):
        farms_windows((4096, 4096), window=16, stride=0.25)
    assert MAX_WINDOWS >= 1024


@pytest.mark.parametrize("shape", [(90, 20), (20, 90), (33, 33)])
def test_the_pooled_esd_is_the_windows_singular_values_squared(
    rng: np.random.Generator, shape: tuple[int, int]
) -> None:
    w = rng.standard_normal(shape)
    evals, count = farms_eigenvalues(w, ratio=1.5, stride=0.5)
    grid = farms_windows(shape, ratio=1.5, stride=0.5)
    expected = np.sort(
        np.concatenate([np.linalg.svd(w[r, c], compute_uv=False) ** 2 for r, c in grid.slices()])
    )
    assert count == grid.count
    np.testing.assert_allclose(evals, expected, rtol=1e-10, atol=1e-12 * expected.max())
    # normalised: each window's eigenvalues divided by its long side; scaled by eig_scale
    scaled, _ = farms_eigenvalues(w, ratio=1.5, normalize=True, eig_scale=0.5)
    long_side = max(grid.rows, grid.cols)
    np.testing.assert_allclose(scaled, expected * 0.5 / long_side, rtol=1e-10, atol=1e-14)


def test_pooled_convolution_slices_give_windows_each(rng: np.random.Generator) -> None:
    stack = rng.standard_normal((3, 40, 10))
    evals, count = farms_eigenvalues(stack, stride=1.0)
    expected = np.sort(
        np.concatenate(
            [
                np.linalg.svd(m[i : i + 10], compute_uv=False) ** 2
                for m in stack
                for i in range(0, 40, 10)
            ]
        )
    )
    assert count == 12
    np.testing.assert_allclose(evals, expected, rtol=1e-10)


def test_float32_windows_agree_with_float64(rng: np.random.Generator) -> None:
    w = rng.standard_normal((200, 50))
    e64, _ = farms_eigenvalues(w)
    e32, _ = farms_eigenvalues(w, precision=Precision.FLOAT32)
    np.testing.assert_allclose(e32, e64, rtol=1e-4, atol=1e-5 * e64.max())
