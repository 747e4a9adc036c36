"""Property tests (hypothesis): crop geometry for any box, image size and landmark placement, and the
basic laws of the metrics (symmetry, identity, bounds)."""
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from thermsr_utils import data, metrics

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])

sizes = st.integers(min_value=1, max_value=700)
coords = st.floats(min_value=-1000, max_value=1500, allow_nan=False, allow_infinity=False)
pads = st.floats(min_value=0.3, max_value=3.0)


def assert_box_inside(box, width, height, keep_square=False):
    x0, y0, x1, y1 = box
    assert all(isinstance(v, int) for v in box)
    assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    assert min(x1 - x0, y1 - y0) >= data.MIN_BOX_SIDE
    if keep_square:
        assert x1 - x0 == y1 - y0


# ---------------------------------------------------------------------------------------------
# Crop geometry
# ---------------------------------------------------------------------------------------------
@FAST
@given(cx=coords, cy=coords, side=st.floats(min_value=0.5, max_value=2000), width=sizes, height=sizes,
       keep_square=st.booleans())
def test_square_box_is_inside_the_image_or_degenerate(cx, cy, side, width, height, keep_square):
    try:
        box = data.square_box(cx, cy, side, width, height, keep_square)
    except data.DegenerateCrop:
        return
    assert_box_inside(box, width, height, keep_square)
    if not keep_square:  # the integer box covers the part of the float square inside the image
        x0, y0, x1, y1 = box
        assert x0 <= max(cx - side / 2, 0) + 1e-6 and y0 <= max(cy - side / 2, 0) + 1e-6
        assert x1 >= min(cx + side / 2, width) - 1e-6 and y1 >= min(cy + side / 2, height) - 1e-6


@FAST
@given(side=st.floats(min_value=data.MIN_BOX_SIDE + 1, max_value=300), width=st.integers(320, 700),
       height=st.integers(320, 700), keep_square=st.booleans())
def test_square_box_well_inside_is_never_degenerate(side, width, height, keep_square):
    box = data.square_box(width / 2, height / 2, side, width, height, keep_square)
    assert_box_inside(box, width, height, keep_square)


@FAST
@given(width=st.integers(8, 700), height=st.integers(8, 700), pad=pads, keep_square=st.booleans(), data_=st.data())
def test_sftl54_box_with_landmarks_partly_outside(width, height, pad, keep_square, data_):
    pts = data_.draw(arrays(np.float64, (data.N_LANDMARKS, 2), elements=coords))
    outline = pts[data.OUTLINE]
    inside = (outline[:, 0] >= 0) & (outline[:, 0] <= width) & (outline[:, 1] >= 0) & (outline[:, 1] <= height)
    try:
        box = data.sftl54_crop_box(pts, width, height, pad=pad, keep_square=keep_square)
    except data.DegenerateCrop:
        # every outline point outside, or a clipped box below MIN_BOX_SIDE; never an outline wholly inside whose
        # square (centred inside the image) keeps at least twice MIN_BOX_SIDE on each axis after clipping
        side = pad * (outline.max(axis=0) - outline.min(axis=0)).max()
        assert not (inside.all() and min(side / 2, width / 2, height / 2) >= data.MIN_BOX_SIDE + 1)
        return
    assert inside.any(), "an outline entirely outside the image must be refused"
    assert_box_inside(box, width, height, keep_square)


@FAST
@given(width=st.integers(40, 700), height=st.integers(40, 700), pad=pads, keep_square=st.booleans(), data_=st.data())
def test_sftl54_box_of_an_outline_inside_the_image_is_never_degenerate(width, height, pad, keep_square, data_):
    unit = st.floats(0, 1)
    pts = data_.draw(arrays(np.float64, (data.N_LANDMARKS, 2), elements=unit)) * [width, height]
    outline = pts[data.OUTLINE]
    side = pad * (outline.max(axis=0) - outline.min(axis=0)).max()
    assume(min(side / 2, width / 2, height / 2) >= data.MIN_BOX_SIDE + 1)
    assert_box_inside(data.sftl54_crop_box(pts, width, height, pad=pad, keep_square=keep_square),
                      width, height, keep_square)


@FAST
@given(width=st.integers(8, 700), height=st.integers(8, 700), pad=pads, keep_square=st.booleans(),
       x=coords, y=coords, w=st.floats(-50, 900), h=st.floats(-50, 900))
def test_thermeval_box_is_inside_the_image_or_degenerate(width, height, pad, keep_square, x, y, w, h):
    try:
        box = data.thermeval_crop_box([x, y, w, h], width, height, pad=pad, keep_square=keep_square)
    except data.DegenerateCrop:
        # never a Person box inside the image whose padded square keeps twice MIN_BOX_SIDE on each axis
        inside = x >= 0 and y >= 0 and x + w <= width and y + h <= height
        assert not (inside and min(w, h, pad * max(w, h)) >= 2 * data.MIN_BOX_SIDE)
        return
    assert w > 0 and h > 0, "a Person box without area must be refused"
    assert_box_inside(box, width, height, keep_square)


# The "inside or degenerate" properties above also hold for a function that always refuses; these do not.
@FAST
@given(width=st.integers(200, 700), height=st.integers(200, 700), pad=pads, keep_square=st.booleans(),
       data_=st.data())
def test_sftl54_box_of_a_face_well_inside_is_never_degenerate(width, height, pad, keep_square, data_):
    fx = data_.draw(arrays(np.float64, (data.N_LANDMARKS,), elements=st.floats(0.3, 0.7)))
    fy = data_.draw(arrays(np.float64, (data.N_LANDMARKS,), elements=st.floats(0.3, 0.7)))
    pts = np.stack([fx * width, fy * height], axis=1)
    pts[data.OUTLINE.start] = (0.3 * width, 0.3 * height)     # the outline spans at least 40% of each side
    pts[data.OUTLINE.stop - 1] = (0.7 * width, 0.7 * height)
    assert_box_inside(data.sftl54_crop_box(pts, width, height, pad=pad, keep_square=keep_square),
                      width, height, keep_square)


@FAST
@given(width=st.integers(200, 700), height=st.integers(200, 700), pad=pads, keep_square=st.booleans(),
       fx=st.floats(0.1, 0.5), fy=st.floats(0.1, 0.5), fw=st.floats(0.3, 0.4), fh=st.floats(0.3, 0.4))
def test_thermeval_box_well_inside_is_never_degenerate(width, height, pad, keep_square, fx, fy, fw, fh):
    box = data.thermeval_crop_box([fx * width, fy * height, fw * width, fh * height], width, height, pad=pad,
                                  keep_square=keep_square)
    assert_box_inside(box, width, height, keep_square)


@FAST
@given(width=st.integers(8, 700), height=st.integers(8, 700), pad=pads)
def test_an_all_outside_outline_is_refused(width, height, pad):
    pts = np.full((data.N_LANDMARKS, 2), -5.0)
    pts[:, 0] -= np.arange(data.N_LANDMARKS)
    with pytest.raises(data.DegenerateCrop):
        data.sftl54_crop_box(pts, width, height, pad=pad)


@FAST
@given(x0=st.integers(0, 500), y0=st.integers(0, 500), w=st.integers(1, 500), h=st.integers(1, 500),
       size=st.integers(1, 512), fx=st.floats(0, 1), fy=st.floats(0, 1))
def test_map_point_sends_the_box_onto_the_crop(x0, y0, w, h, size, fx, fy):
    box = (x0, y0, x0 + w, y0 + h)
    assert data.map_point((x0, y0), box, size) == (0.0, 0.0)
    assert data.map_point((x0 + w, y0 + h), box, size) == pytest.approx((size, size))
    mx, my = data.map_point((x0 + fx * w, y0 + fy * h), box, size)
    assert mx == pytest.approx(fx * size, abs=1e-6 * size) and my == pytest.approx(fy * size, abs=1e-6 * size)


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------
def images(min_side=7, max_side=20):
    """Strategy: pairs of float32 RGB batches N×3×H×W in [0, 1] of the same shape."""
    shape = st.tuples(st.integers(1, 2), st.just(3), st.integers(min_side, max_side), st.integers(min_side, max_side))
    unit = st.floats(0, 1, width=32)
    return shape.flatmap(lambda s: st.tuples(arrays(np.float32, s, elements=unit), arrays(np.float32, s, elements=unit)))


@FAST
@given(pair=images())
def test_psnr_is_symmetric_and_infinite_only_for_identical_images(pair):
    a, b = (torch.from_numpy(x) for x in pair)
    ab, ba = metrics.psnr(a, b), metrics.psnr(b, a)
    assert torch.equal(ab, ba)
    assert torch.isinf(metrics.psnr(a, a)).all() and (metrics.psnr(a, a) > 0).all()
    same = (a == b).flatten(1).all(dim=1)
    assert torch.equal(torch.isinf(ab), same)
    assert (ab[~same] >= 0).all()  # the largest possible MSE in [0, 1] is 1, i.e. 0 dB (all zeros vs all ones)


@FAST
@given(pair=images())
def test_ssim_is_at_most_one_and_one_for_identical_images(pair):
    a, b = (torch.from_numpy(x) for x in pair)
    s = metrics.ssim(a, b)
    assert s.shape == (a.shape[0],) and np.all(s <= 1 + 1e-9) and np.all(s >= -1 - 1e-9)
    assert np.allclose(metrics.ssim(a, a), 1.0)


@pytest.fixture(scope="module")
def lpips_metric():
    return metrics.LPIPSMetric()


@SLOW
@given(n=st.integers(1, 2), h=st.integers(32, 48), w=st.integers(32, 48), seed=st.integers(0, 2**32 - 1),
       blur=st.booleans())
def test_lpips_is_non_negative_symmetric_and_zero_for_identical_images(lpips_metric, n, h, w, seed, blur):
    rng = np.random.default_rng(seed)  # large images drawn from a seed: element-wise drawing is slow
    a = torch.from_numpy(rng.random((n, 3, h, w), dtype=np.float32))
    b = torch.nn.functional.avg_pool2d(a, 3, 1, 1) if blur else torch.from_numpy(rng.random((n, 3, h, w),
                                                                                         dtype=np.float32))
    ab, ba = lpips_metric(a, b), lpips_metric(b, a)
    assert (ab >= 0).all()
    assert torch.allclose(ab, ba, rtol=1e-4, atol=1e-6)
    assert torch.allclose(lpips_metric(a, a), torch.zeros(a.shape[0]), atol=1e-6)


@FAST
@given(pair=images(), shave=st.integers(0, 2))
def test_psnr_y_is_symmetric(pair, shave):
    a, b = (torch.from_numpy(x) for x in pair)
    assume(min(a.shape[-2:]) > 2 * shave)
    ab, ba = metrics.psnr_y(a, b, shave=shave), metrics.psnr_y(b, a, shave=shave)
    assert torch.equal(ab, ba) or all(math.isinf(x) and math.isinf(y) for x, y in zip(ab.tolist(), ba.tolist()))
