"""Tests of splicing, LDA and MLLT (asr_kd.hmm.lda) on synthetic data with a known transform."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from asr_kd.hmm.lda import (
    LdaStats,
    estimate_lda,
    estimate_mllt,
    mllt_objf,
    mllt_stats,
    splice,
)


def test_splice_replicates_the_edges() -> None:
    x = torch.arange(4.0)[:, None] * torch.tensor([[1.0, 10.0]])
    out = splice(x, 1)
    assert out.shape == (4, 6)
    assert out[0].tolist() == [0, 0, 0, 0, 1, 10] and out[3].tolist() == [
        2,
        20,
        3,
        30,
        3,
        30,
    ]


def lda_data(seed: int = 0):
    """Classes that differ in z[0], z[1] only (z within-class N(0, I)), seen through x = R z."""
    g = torch.Generator().manual_seed(seed)
    num_classes, per_class, dim = 6, 400, 5
    means = torch.zeros(num_classes, dim, dtype=torch.float64)
    means[:, :2] = 3.0 * torch.randn(num_classes, 2, generator=g, dtype=torch.float64)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    z = means[labels] + torch.randn(len(labels), dim, generator=g, dtype=torch.float64)
    mix = torch.randn(dim, dim, generator=g, dtype=torch.float64) + 2 * torch.eye(
        dim, dtype=torch.float64
    )
    return z @ mix.T, labels, mix


def test_lda_invariants_and_recovers_the_discriminant_subspace() -> None:
    x, labels, mix = lda_data()
    stats = LdaStats(6, 5)
    stats.add(x[:1000], labels[:1000])
    stats.add(x[1000:], labels[1000:])  # accumulating in two batches = in one
    matrix, eigvals = estimate_lda(stats, 2)
    assert matrix.shape == (2, 5) and bool((eigvals[:-1] >= eigvals[1:]).all())
    # invariants: within-class covariance -> I, between-class -> diag(eigvals)
    y = x @ matrix.T
    class_means = torch.stack([y[labels == c].mean(0) for c in range(6)])
    within = sum(
        ((y[labels == c] - class_means[c]).T @ (y[labels == c] - class_means[c]))
        for c in range(6)
    ) / len(y)
    assert torch.allclose(within, torch.eye(2, dtype=torch.float64), atol=1e-5)
    centred = class_means - y.mean(0)
    between = (centred.T @ centred) * 400 / len(y)
    assert torch.allclose(between, torch.diag(eigvals), atol=1e-4)
    # known transform: M R maps z to 2 dims using z[0], z[1] only (the other dims carry no class info)
    through = matrix @ mix
    assert through[:, 2:].abs().max() < 0.1 * through[:, :2].abs().max()
    with pytest.raises(ValueError, match="classes"):
        estimate_lda(stats, 6)


def diag_model_loglike(y: torch.Tensor, labels: torch.Tensor, num_classes: int):
    """Average log-likelihood of ML diagonal Gaussians per class, and their variances and scatters."""
    total, variances, scatters = 0.0, [], []
    for c in range(num_classes):
        yc = y[labels == c]
        d = yc - yc.mean(0)
        var = (d * d).mean(0)
        total += float(
            -0.5
            * len(yc)
            * (y.shape[1] * (math.log(2 * math.pi) + 1) + var.log().sum())
        )
        variances.append(var)
        scatters.append(d.T @ d)
    return total / len(y), torch.stack(variances), torch.stack(scatters)


def test_mllt_raises_the_likelihood_and_finds_the_hidden_rotation() -> None:
    g = torch.Generator().manual_seed(1)
    num_classes, per_class, dim = 5, 1000, 3
    # diagonal-covariance classes in a hidden basis: y = Q v, v ~ N(mu_c, diag(s_c))
    scales = 0.3 + 2.0 * torch.rand(num_classes, dim, generator=g, dtype=torch.float64)
    mu = 2.0 * torch.randn(num_classes, dim, generator=g, dtype=torch.float64)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    v = mu[labels] + scales[labels] * torch.randn(
        len(labels), dim, generator=g, dtype=torch.float64
    )
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    x = v @ q.T
    transform = torch.eye(dim, dtype=torch.float64)
    before, variances, scatters = diag_model_loglike(x, labels, num_classes)
    history = [before]
    for _ in range(
        6
    ):  # as the training loop: stats with the current variances, update, re-fit
        g_stats = mllt_stats(scatters, variances)
        a = estimate_mllt(g_stats, float(len(x)))
        assert (
            mllt_objf(a, g_stats, len(x))
            >= mllt_objf(torch.eye(dim, dtype=torch.float64), g_stats, len(x)) - 1e-6
        )
        transform = a @ transform
        y = x @ transform.T
        value, variances, scatters = diag_model_loglike(y, labels, num_classes)
        history.append(
            value + float(torch.linalg.slogdet(transform)[1])
        )  # + log|det| keeps x's density
    assert all(b >= a - 1e-6 for a, b in itertools.pairwise(history))
    best, _, _ = diag_model_loglike(
        v, labels, num_classes
    )  # the hidden basis (Q orthogonal: det 1)
    assert history[0] < best - 0.05
    assert history[-1] == pytest.approx(best, abs=0.01)
