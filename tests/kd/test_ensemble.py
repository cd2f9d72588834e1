import math

import pytest
import torch

from asr_kd.kd.ensemble import ensemble_posteriors, validate_weights

LN3 = math.log(3.0)
# two teachers, one frame, P = 2: softmax([0, ln 3]) = [1/4, 3/4]; softmax([ln 3, 0]) = [3/4, 1/4]
Z1 = torch.tensor([0.0, LN3])
Z2 = torch.tensor([LN3, 0.0])


def test_arithmetic_uniform_by_hand():
    # (1/2)([1/4, 3/4] + [3/4, 1/4]) = [1/2, 1/2]
    p = ensemble_posteriors([Z1, Z2], temperature=1.0)
    torch.testing.assert_close(p, torch.tensor([0.5, 0.5]))


def test_arithmetic_weighted_by_hand():
    # 0.75 [1/4, 3/4] + 0.25 [3/4, 1/4] = [3/16 + 3/16, 9/16 + 1/16] = [0.375, 0.625]
    p = ensemble_posteriors(torch.stack([Z1, Z2]), temperature=1.0, weights=[0.75, 0.25])
    torch.testing.assert_close(p, torch.tensor([0.375, 0.625]))


def test_temperature_divides_logits_by_hand():
    # z / T with T = 2: [0, 2 ln 3] / 2 = [0, ln 3] -> [1/4, 3/4]; at T = 1 it would be [1/10, 9/10]
    z = torch.tensor([[0.0, 2 * LN3]])
    torch.testing.assert_close(ensemble_posteriors(z, temperature=2.0), torch.tensor([0.25, 0.75]))
    torch.testing.assert_close(ensemble_posteriors(z, temperature=1.0), torch.tensor([0.1, 0.9]))


def test_geometric_weighted_by_hand():
    # p_a ∝ (1/4)^.75 (3/4)^.25, p_b ∝ (3/4)^.75 (1/4)^.25: p_b / p_a = 3^.75 / 3^.25 = sqrt(3)
    # -> [1 / (1 + sqrt 3), sqrt 3 / (1 + sqrt 3)]
    p = ensemble_posteriors([Z1, Z2], temperature=1.0, mode="geometric", weights=[0.75, 0.25])
    s3 = math.sqrt(3.0)
    torch.testing.assert_close(p, torch.tensor([1 / (1 + s3), s3 / (1 + s3)]))


def test_geometric_differs_from_arithmetic_by_hand():
    # P = 3: teacher 1 -> [1/2, 1/2, 0+], teacher 2 -> [1/2, 0+, 1/2] (third logit very negative)
    # arithmetic: [1/2, 1/4, 1/4]; geometric: sqrt of products: [1/2, ~0, ~0] -> [1, 0, 0] after renormalising
    big = 60.0
    z1, z2 = torch.tensor([0.0, 0.0, -big]), torch.tensor([0.0, -big, 0.0])
    torch.testing.assert_close(ensemble_posteriors([z1, z2]), torch.tensor([0.5, 0.25, 0.25]))
    torch.testing.assert_close(ensemble_posteriors([z1, z2], mode="geometric"), torch.tensor([1.0, 0.0, 0.0]))


def test_against_the_formulas_on_random_batches():
    torch.manual_seed(0)
    z = torch.randn(4, 2, 7, 11) * 3  # (K, B, T, P)
    w = torch.tensor([0.1, 0.2, 0.3, 0.4])
    t = 2.5
    expected_a = sum(w[k] * torch.softmax(z[k] / t, -1) for k in range(4))
    g = sum(w[k] * torch.log_softmax(z[k] / t, -1) for k in range(4))
    expected_g = g.exp() / g.exp().sum(-1, keepdim=True)
    torch.testing.assert_close(ensemble_posteriors(z, t, "arithmetic", w), expected_a)
    torch.testing.assert_close(ensemble_posteriors(list(z), t, "geometric", w), expected_g)
    for mode in ("arithmetic", "geometric"):
        torch.testing.assert_close(ensemble_posteriors(z, t, mode).sum(-1), torch.ones(2, 7))


def test_one_teacher_is_its_softmax_and_zero_weight_drops_a_teacher():
    z = torch.randn(5, 6)
    torch.testing.assert_close(ensemble_posteriors(z[None], 3.0), torch.softmax(z / 3, -1))
    inf_teacher = torch.full((5, 6), float("-inf"))  # would give nan if it took part
    for mode in ("arithmetic", "geometric"):
        p = ensemble_posteriors([z, inf_teacher], 3.0, mode, weights=[1.0, 0.0])
        torch.testing.assert_close(p, torch.softmax(z / 3, -1))


def test_float64_kept_half_upcast():
    z = torch.randn(2, 3, 4, dtype=torch.float64)
    assert ensemble_posteriors(z).dtype == torch.float64
    assert ensemble_posteriors(z.half()).dtype == torch.float32


@pytest.mark.parametrize(
    "weights, message",
    [
        ([0.5, 0.5, 0.0], "one entry per teacher"),
        ([1.5, -0.5], "non-negative"),
        ([0.5, float("nan")], "finite"),
        ([0.5, 0.4], "sum to 1"),
    ],
)
def test_weights_validated(weights, message):
    with pytest.raises(ValueError, match=message):
        ensemble_posteriors([Z1, Z2], weights=weights)


def test_weights_default_uniform_and_tolerance():
    torch.testing.assert_close(validate_weights(None, 4), torch.full((4,), 0.25, dtype=torch.float64))
    validate_weights([1 / 3, 1 / 3, 1 / 3 + 1e-7], 3)  # within tolerance


@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": 0.0}, "temperature"), ({"temperature": -1.0}, "temperature"),
    ({"mode": "harmonic"}, "mode"),
])  # fmt: skip
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ensemble_posteriors([Z1, Z2], **kwargs)
    with pytest.raises(ValueError, match="same shape"):
        ensemble_posteriors([Z1, torch.zeros(3)])
    with pytest.raises(ValueError, match="empty"):
        ensemble_posteriors([])
