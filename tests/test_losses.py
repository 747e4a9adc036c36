"""Tests of thermsr_utils.losses on tiny tensors."""
import math

import pytest
import torch

from thermsr_utils import losses
from thermsr_utils.losses import CombinedLoss, fft_amplitude_l1, l1_loss, make_loss, perceptual_term


pytestmark = pytest.mark.usefixtures("one_thread")


def _rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g)


class FakeLPIPS:
    """Stands in for LPIPSMetric: records what .loss receives; loss = mean squared difference."""

    name = "fake-lpips"

    def __init__(self):
        self.seen = []

    def loss(self, sr, hr):
        self.seen.append(sr.detach().clone())
        return (sr - hr).pow(2).mean()


# ----------------------------------------------------------------------------------- l1_loss
def test_l1_hand_computed_and_unclamped():
    sr = torch.tensor([0.5, 1.5, 2.0, -1.0]).view(1, 1, 2, 2)
    hr = torch.tensor([0.0, 1.0, 1.0, 0.0]).view(1, 1, 2, 2)
    # |0.5| + |0.5| + |1.0| + |1.0| over 4 elements; clamping sr first would give (0.5 + 0 + 0 + 0) / 4
    assert l1_loss(sr, hr).item() == pytest.approx(0.75)


def test_l1_zero_for_identical_inputs():
    x = _rand(2, 3, 5, 5)
    assert l1_loss(x, x.clone()).item() == 0.0


def test_l1_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shapes differ"):
        l1_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))


def test_l1_rejects_integer_tensors():
    with pytest.raises(ValueError, match="floating"):
        l1_loss(torch.zeros(1, 3, 2, 2, dtype=torch.uint8), torch.zeros(1, 3, 2, 2, dtype=torch.uint8))


# --------------------------------------------------------------------------------- fft term
def test_fft_amplitude_of_constants():
    h, w, a, b = 4, 6, 0.8, 0.3
    sr = torch.full((2, 3, h, w), a)
    hr = torch.full((2, 3, h, w), b)
    # orthonormal FFT of a constant c: DC bin = c·sqrt(HW), all other bins 0 → mean over HW bins
    expected = abs(a - b) * math.sqrt(h * w) / (h * w)
    assert fft_amplitude_l1(sr, hr).item() == pytest.approx(expected, rel=1e-5)


def test_fft_amplitude_of_an_impulse():
    h = w = 4
    sr = torch.zeros(1, 1, h, w)
    sr[0, 0, 1, 2] = 0.6
    hr = torch.zeros(1, 1, h, w)
    # an impulse of height v has amplitude v / sqrt(HW) in every bin (orthonormal FFT)
    assert fft_amplitude_l1(sr, hr).item() == pytest.approx(0.6 / math.sqrt(h * w), rel=1e-5)


def test_fft_amplitude_ignores_circular_shifts_but_l1_does_not():
    hr = _rand(1, 3, 8, 8, seed=1)
    shifted = torch.roll(hr, shifts=(2, 3), dims=(2, 3))
    assert fft_amplitude_l1(shifted, hr).item() == pytest.approx(0.0, abs=1e-6)
    assert l1_loss(shifted, hr).item() > 0.05


def test_fft_amplitude_zero_for_identical_and_positive_otherwise():
    x = _rand(2, 3, 8, 8, seed=2)
    assert fft_amplitude_l1(x, x.clone()).item() == pytest.approx(0.0, abs=1e-7)
    assert fft_amplitude_l1(x * 0.5, x).item() > 0


def test_fft_amplitude_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shapes differ"):
        fft_amplitude_l1(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 4, 4))


@pytest.mark.parametrize("fn", [l1_loss, fft_amplitude_l1])
def test_gradients_flow(fn):
    sr = _rand(2, 3, 8, 8, seed=3).requires_grad_()
    hr = _rand(2, 3, 8, 8, seed=4)
    fn(sr, hr).backward()
    assert sr.grad is not None
    assert torch.isfinite(sr.grad).all()
    assert sr.grad.abs().sum() > 0


# -------------------------------------------------------------------------- perceptual term
def test_perceptual_term_clamps_before_the_metric():
    metric = FakeLPIPS()
    term = perceptual_term(metric)
    sr = torch.tensor([-0.5, 0.3, 1.7, 0.8]).view(1, 1, 2, 2).requires_grad_()
    hr = torch.tensor([0.0, 0.2, 1.0, 0.5]).view(1, 1, 2, 2)
    value = term(sr, hr)
    seen = metric.seen[-1].flatten().tolist()
    assert seen == pytest.approx([0.0, 0.3, 1.0, 0.8])          # > 1 treated as 1, < 0 as 0
    assert value.item() == pytest.approx((0.1 ** 2 + 0.3 ** 2) / 4)
    value.backward()
    grad = sr.grad.flatten()
    assert grad[0] == 0 and grad[2] == 0                       # clamped pixels get no gradient
    assert grad[1] != 0 and grad[3] != 0


def test_perceptual_term_needs_a_loss_method():
    with pytest.raises(TypeError, match="loss"):
        perceptual_term(object())


# ---------------------------------------------------------------------------- CombinedLoss
def test_combined_total_and_bookkeeping():
    sr = _rand(2, 3, 8, 8, seed=5)
    hr = _rand(2, 3, 8, 8, seed=6)
    loss = CombinedLoss([("l1", 1.0, l1_loss), ("fft", 2.5, fft_amplitude_l1)])
    total = loss(sr, hr)
    a, b = l1_loss(sr, hr).item(), fft_amplitude_l1(sr, hr).item()
    assert total.item() == pytest.approx(a + 2.5 * b, rel=1e-6)
    assert loss.last == pytest.approx({"l1": a, "fft": b}, rel=1e-6)
    assert all(isinstance(v, float) for v in loss.last.values())
    shares = loss.shares()
    assert shares["fft"] == pytest.approx(2.5 * b / (a + 2.5 * b), rel=1e-6)
    assert sum(shares.values()) == pytest.approx(1.0)


def test_combined_gradient_is_the_weighted_sum():
    hr = _rand(1, 3, 8, 8, seed=7)
    x1 = _rand(1, 3, 8, 8, seed=8).requires_grad_()
    x2 = x1.detach().clone().requires_grad_()
    CombinedLoss([("l1", 1.0, l1_loss), ("fft", 3.0, fft_amplitude_l1)])(x1, hr).backward()
    (l1_loss(x2, hr) + 3.0 * fft_amplitude_l1(x2, hr)).backward()
    assert torch.allclose(x1.grad, x2.grad, atol=1e-7)


def test_combined_zero_weight_term_is_watched_not_optimised():
    hr = _rand(1, 3, 4, 4, seed=9)
    sr = _rand(1, 3, 4, 4, seed=10).requires_grad_()
    loss = CombinedLoss([("l1", 1.0, l1_loss), ("fft", 0.0, fft_amplitude_l1)])
    total = loss(sr, hr)
    assert total.item() == pytest.approx(l1_loss(sr, hr).item())
    assert loss.last["fft"] == pytest.approx(fft_amplitude_l1(sr, hr).item())
    assert loss.shares()["fft"] == 0.0


@pytest.mark.parametrize("terms, err", [
    ([], ValueError),
    ([("a", 1.0, l1_loss), ("a", 1.0, l1_loss)], ValueError),
    ([("a", -1.0, l1_loss)], ValueError),
    ([("a", float("nan"), l1_loss)], ValueError),
    ([("a", 1.0, "not callable")], TypeError),
    ([("", 1.0, l1_loss)], ValueError),
])
def test_combined_rejects_bad_terms(terms, err):
    with pytest.raises(err):
        CombinedLoss(terms)


def test_combined_all_zero_weights_is_an_error():
    loss = CombinedLoss([("l1", 0.0, l1_loss)])
    with pytest.raises(ValueError, match="weight 0"):
        loss(torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2))


# ------------------------------------------------------------------------------- make_loss
def test_make_loss_recipes_take_the_weight_they_are_given():
    assert [(n, w) for n, w, _ in make_loss("l1").terms] == [("l1", 1.0)]
    assert [(n, w) for n, w, _ in make_loss("l1+fft", weight=0.5).terms] == [("l1", 1.0), ("fft", 0.5)]
    lp = make_loss("l1+lpips", weight=0.05, lpips_metric=FakeLPIPS())
    assert [(n, w) for n, w, _ in lp.terms] == [("l1", 1.0), ("lpips", 0.05)]
    assert "fake-lpips" in lp.describe()[1]["fn"]


@pytest.mark.parametrize("call, message", [
    (lambda: make_loss("l1+lpips", weight=-0.05, lpips_metric=FakeLPIPS()),
     "parameter 'lpips_weight' = -0.05 is not allowed: expected a number ≥ 0"),
    (lambda: make_loss("l1+fft", weight=float("inf")),
     "parameter 'fft_weight' = inf is not allowed: expected a number ≥ 0"),
    (lambda: losses.v2_loss("perceptual", FakeLPIPS(), lpips_weight=0.05, fft_weight=16.0),
     "parameter 'v2_perceptual' = 'perceptual' is not allowed: expected one of 'lpips', 'fft'"),
])
def test_a_bad_weight_or_choice_gets_the_runners_message(call, message):
    # the rule is params' (the runner checks the same values with it): one message for one bad value
    with pytest.raises(ValueError) as err:
        call()
    assert str(err.value) == message


def test_make_loss_lpips_recipe_uses_the_metric_on_clamped_output():
    metric = FakeLPIPS()
    loss = make_loss("l1+lpips", weight=0.1, lpips_metric=metric)
    sr = torch.full((1, 3, 4, 4), 1.5)
    hr = torch.full((1, 3, 4, 4), 0.5)
    total = loss(sr, hr)
    assert metric.seen[-1].max().item() == 1.0
    assert total.item() == pytest.approx(1.0 + 0.1 * 0.25)


@pytest.mark.parametrize("kwargs, match", [
    ({"name": "l2"}, "unknown loss"),
    ({"name": "l1+lpips"}, "lpips_metric"),
    ({"name": "l1", "weight": 0.1}, "weight"),
    ({"name": "l1+fft"}, "needs the weight"),
])
def test_make_loss_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_loss(**kwargs)


def test_describe_loss_of_plain_function_and_combined():
    assert losses.describe_loss(l1_loss) == "l1_loss"
    assert losses.describe_loss(make_loss("l1+fft", 16.0)) == [
        {"name": "l1", "weight": 1.0, "fn": "l1_loss"},
        {"name": "fft", "weight": 16.0, "fn": "fft_amplitude_l1"},
    ]
