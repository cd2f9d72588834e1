"""Diagonal GMMs of the aligner: likelihoods, statistics, ML update, flooring, mix-up, schedule."""

from __future__ import annotations

import io
import logging
import math

import pytest
import torch

from asr_kd.align.gmm import (
    KALDI_MONO_REALIGN_ITERS,
    DiagGmm,
    GmmStats,
    num_gauss_schedule,
    realign_iters,
    split_targets,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _gmm(means: list, vars: list, weights: list) -> DiagGmm:
    """One pdf per outer list entry; pdfs with fewer components padded with weight 0 (-inf)."""
    max_gauss, dim = max(len(w) for w in weights), len(means[0][0])

    def pad(items: list, fill: object) -> list:
        return items + [fill] * (max_gauss - len(items))

    return DiagGmm(
        torch.tensor([pad(m, [0.0] * dim) for m in means]),
        torch.tensor([pad(v, [1.0] * dim) for v in vars]),
        torch.tensor([pad([math.log(x) for x in w], -math.inf) for w in weights]),
    )


def test_log_likelihood_1d_single_gaussian_by_hand() -> None:
    # N(2; mean 1, var 4): -0.5 log(2 pi 4) - (2 - 1)^2 / (2 * 4) = -1.612086 - 0.125
    gmm = _gmm([[[1.0]]], [[[4.0]]], [[1.0]])
    assert gmm.log_likelihoods(torch.tensor([[2.0]])).item() == pytest.approx(-1.737086, abs=1e-5)


def test_log_likelihood_two_component_mixture_by_hand() -> None:
    # 0.3 N(1; 0, 1) + 0.7 N(1; 3, 2) = 0.3 * 0.241971 + 0.7 * 0.103777 = 0.145235 -> log = -1.929402
    gmm = _gmm([[[0.0], [3.0]], [[1.0]]], [[[1.0], [2.0]], [[4.0]]], [[0.3, 0.7], [1.0]])
    ll = gmm.log_likelihoods(torch.tensor([[1.0], [2.0]]))
    assert ll.shape == (2, 2)
    assert ll[0, 0].item() == pytest.approx(-1.929402, abs=1e-5)
    assert ll[1, 1].item() == pytest.approx(-1.737086, abs=1e-5)  # padded component ignored
    assert gmm.log_likelihoods(torch.ones(3, 5, 1)).shape == (3, 5, 2)


def test_float32_log_likelihoods_match_float64_direct_computation() -> None:
    # D=39, means far from 0 (offset 20): the expanded quadratic form in float32 would lose ~5e-3
    # without centering; with it the error stays below 1e-3 on values of magnitude up to ~800.
    torch.manual_seed(0)
    num_pdfs, max_gauss, dim = 50, 4, 39
    means = 20 + 3 * torch.randn(num_pdfs, max_gauss, dim)
    vars = torch.exp(torch.empty(num_pdfs, max_gauss, dim).uniform_(-1, 1.5))
    log_weights = torch.log_softmax(torch.randn(num_pdfs, max_gauss), 1)
    gmm = DiagGmm(means, vars, log_weights)
    pdf, comp = torch.randint(0, num_pdfs, (2000,)), torch.randint(0, max_gauss, (2000,))
    x = means[pdf, comp] + 1.5 * vars[pdf, comp].sqrt() * torch.randn(2000, dim)
    diff = x.double()[:, None, None, :] - means.double()
    vars64 = vars.double()
    direct = log_weights.double() - 0.5 * (torch.log(2 * math.pi * vars64) + diff**2 / vars64).sum(-1)
    ll = gmm.log_likelihoods(x)
    assert ll.dtype == torch.float32
    assert (ll.double() - direct.logsumexp(-1)).abs().max() < 1e-3


def _xor_data(num_frames: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """3 pdfs x 2 components in D=4. Pdfs 0 and 1 share mean 0 and diagonal variance (an XOR in dims
    0-1), so one Gaussian per pdf cannot tell them apart (~67% accuracy); two per pdf can (~99.7%)."""
    gen = torch.Generator().manual_seed(seed)
    true_means = torch.tensor(
        [
            [[3.0, 3, 0, 0], [-3, -3, 0, 0]],
            [[3.0, -3, 0, 0], [-3, 3, 0, 0]],
            [[0.0, 0, 4, 4], [0, 0, -4, -4]],
        ]
    )
    true_vars = 0.5 + 0.5 * torch.rand(3, 2, 4, generator=gen)
    labels = torch.randint(0, 3, (num_frames,), generator=gen)
    comps = (torch.rand(num_frames, generator=gen) < 0.4).long()  # weights 0.6 / 0.4
    noise = torch.randn(num_frames, 4, generator=gen)
    x = true_means[labels, comps] + true_vars[labels, comps].sqrt() * noise
    return x, labels, true_means, true_vars


@pytest.mark.parametrize("device", DEVICES)
def test_em_from_flat_start_recovers_mixtures(device: str) -> None:
    x, labels, true_means, _ = _xor_data(20000, seed=1)
    x, labels = x.to(device), labels.to(device)
    gmm = DiagGmm.init_flat(3, x.mean(0), x.var(0))
    # 1 Gaussian per pdf for 2 updates, then 2. Breaking the XOR symmetry from a random split
    # direction takes a few EM iterations (data seeds 1-20 all converge within these 12 updates).
    schedule = num_gauss_schedule(12, 3, 6, max_iter_inc=1)
    assert schedule == [3, 3] + [6] * 10
    for total in schedule:
        stats = gmm.new_stats()
        gmm.accumulate(stats, x, labels)
        info = gmm.update(stats)
        assert info.num_frames == pytest.approx(20000) and info.num_pdfs_no_data == 0
        gmm.mix_up(total)
    assert gmm.num_gauss_per_pdf.tolist() == [2, 2, 2]
    accuracy = (gmm.log_likelihoods(x).argmax(1) == labels).float().mean().item()
    assert accuracy >= 0.95
    # ~3300 frames per component, std <= 1: standard error of a mean <= 0.018, and the components of
    # a pdf lie >= 8.5 std apart (no overlap bias), so 0.1 is a ~6-sigma tolerance.
    est = gmm.means.cpu()
    for pdf in range(3):
        err = min((est[pdf, perm] - true_means[pdf]).abs().max().item() for perm in ([0, 1], [1, 0]))
        assert err < 0.1, (pdf, est[pdf], true_means[pdf])


def test_single_gaussian_per_pdf_cannot_separate_xor() -> None:
    # the control of the EM test: the 95% there needs the mixing up
    x, labels, _, _ = _xor_data(20000, seed=1)
    gmm = DiagGmm.init_flat(3, x.mean(0), x.var(0))
    for _ in range(3):
        stats = gmm.new_stats()
        gmm.accumulate(stats, x, labels)
        gmm.update(stats)
    assert (gmm.log_likelihoods(x).argmax(1) == labels).float().mean().item() < 0.8


def test_variance_floor_applied_exactly() -> None:
    torch.manual_seed(2)
    x = torch.randn(3000, 3) * torch.tensor([2.0, 1.0, 3.0])
    labels = torch.randint(0, 2, (3000,))
    x[labels == 1, 1] = 0.7  # pdf 1 has zero variance in dim 1
    gmm = DiagGmm.init_flat(2, x.mean(0), x.var(0))
    stats = gmm.new_stats()
    gmm.accumulate(stats, x, labels)
    info = gmm.update(stats, var_floor_factor=0.01)
    floor = 0.01 * stats.global_mean_var()[1]
    assert torch.equal(gmm.vars[1, 0, 1], floor[1].float())
    torch.testing.assert_close(floor[1], 0.01 * x[:, 1].double().var(unbiased=False), rtol=1e-9, atol=0)
    assert info.num_vars_floored == 1
    assert gmm.means[1, 0, 1].item() == pytest.approx(0.7, abs=1e-6)
    torch.testing.assert_close(gmm.vars[0, 0], x[labels == 0].var(0, unbiased=False), rtol=1e-4, atol=0)


def test_stats_are_additive() -> None:
    x, labels, _, _ = _xor_data(5000, seed=3)
    gmm = DiagGmm.init_flat(3, x.mean(0), x.var(0))
    gmm.update(_accumulated(gmm, x, labels))
    gmm.mix_up(6)
    whole = _accumulated(gmm, x, labels)
    halves = _accumulated(gmm, x[:2000], labels[:2000]).add_(_accumulated(gmm, x[2000:], labels[2000:]))
    for a, b in zip(whole.tensors(), halves.tensors()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-9)
    assert whole.num_frames == pytest.approx(5000)
    torch.testing.assert_close(whole.occupancy.sum(1), torch.bincount(labels, minlength=3).double())


def _accumulated(gmm: DiagGmm, x: torch.Tensor, labels: torch.Tensor) -> GmmStats:
    stats = gmm.new_stats()
    gmm.accumulate(stats, x, labels)
    return stats


def test_split_targets_power_rule_by_hand() -> None:
    # occ^0.2 = 3.98, 2.51, 1.58. Greedy on occ^p / count from (1, 1, 1): pdf 0 (3.98) -> 2,
    # pdf 1 (2.51) -> 2, pdf 0 (1.99) -> 3, pdf 2 (1.58) -> 2: (3, 2, 2), total 7.
    occ = torch.tensor([1000.0, 100.0, 10.0])
    assert split_targets(occ, 7, power=0.2, min_count=0.0) == [3, 2, 2]
    assert split_targets(occ, 6, power=0.2, min_count=0.0) == [3, 2, 1]  # pdf 0's third before pdf 2's 2nd
    assert split_targets(occ, 7, power=1.0, min_count=0.0) == [5, 1, 1]  # proportional to occupancy
    # min_count 20: pdf 2 (10 frames) never splits, pdf 1 stops at 4 (5 * 20 >= 100)
    assert split_targets(occ, 20, power=0.2, min_count=20.0) == [15, 4, 1]


def test_mix_up_reaches_total_and_splits_heaviest_component() -> None:
    gmm = _gmm(
        [[[0.0, 0.0], [5.0, 5.0]], [[1.0, 1.0]], [[2.0, 2.0]]],
        [[[1.0, 4.0], [1.0, 1.0]], [[1.0, 1.0]], [[1.0, 1.0]]],
        [[0.8, 0.2], [1.0], [1.0]],
    )
    total = gmm.mix_up(7, pdf_occupancy=torch.tensor([1000.0, 100.0, 10.0]), min_count=0.0)
    # targets (3, 2, 2); pdf 0 already has 2: one split of its heaviest component
    assert total == 7 and gmm.total_gauss == 7 and gmm.num_gauss_per_pdf.tolist() == [3, 2, 2]
    torch.testing.assert_close(gmm.log_weights[0].exp(), torch.tensor([0.4, 0.2, 0.4]))
    parent, child = gmm.means[0, 0], gmm.means[0, 2]
    torch.testing.assert_close((parent + child) / 2, torch.zeros(2), atol=1e-6, rtol=0)
    # parent, child = mu +- 0.2 * std * r; r: first row of the draw for the 3 pdfs split in the first
    # round, from a generator seeded with seed (0) + Gaussians before the mix-up (4)
    direction = torch.randn(3, 2, generator=torch.Generator().manual_seed(4))[0]
    torch.testing.assert_close(parent, 0.2 * torch.tensor([1.0, 2.0]) * direction)
    torch.testing.assert_close(gmm.vars[0, 2], torch.tensor([1.0, 4.0]))
    torch.testing.assert_close(gmm.log_weights[1].exp(), torch.tensor([0.5, 0.5, 0.0]))


def test_pdf_without_data_keeps_parameters(caplog: pytest.LogCaptureFixture) -> None:
    x, labels, _, _ = _xor_data(3000, seed=4)
    gmm = DiagGmm.init_flat(4, x.mean(0), x.var(0))  # pdf 3 never labelled
    gmm.update(_accumulated(gmm, x, labels))
    gmm.mix_up(8, pdf_occupancy=torch.tensor([1000.0, 1000, 1000, 1000]))  # pdf 3 gets 2 components
    before = {k: v.clone() for k, v in gmm.state_dict().items()}
    with caplog.at_level(logging.WARNING):
        info = gmm.update(_accumulated(gmm, x, labels))
    assert info.num_pdfs_no_data == 1 and "1 of 4 pdfs had no frames" in caplog.text
    assert gmm.num_gauss_per_pdf[3].item() == 2
    m = before["means"].shape[1]
    assert torch.equal(gmm.means[3, :m], before["means"][3])
    assert torch.equal(gmm.vars[3, :m], before["vars"][3])
    assert torch.equal(gmm.log_weights[3, :m], before["log_weights"][3])
    assert not torch.equal(gmm.means[0], before["means"][0])


def test_low_occupancy_components_removed_one_kept() -> None:
    # pdf 0: 500 frames at 0, 5 at 10 -> the 5-frame component (< 10) is removed.
    # pdf 1: 6 frames in all -> no component qualifies; the most occupied keeps its old parameters.
    gmm = _gmm([[[0.0], [10.0]], [[0.0], [10.0]]], [[[1.0], [1.0]], [[1.0], [1.0]]], [[0.5, 0.5], [0.5, 0.5]])
    x = torch.cat([torch.randn(500), 10 + torch.randn(5), 10 + torch.randn(4), torch.randn(2)])[:, None]
    labels = torch.tensor([0] * 505 + [1] * 6)
    info = gmm.update(_accumulated(gmm, x, labels))
    assert gmm.num_gauss_per_pdf.tolist() == [1, 1] and info.num_gauss_removed == 2
    assert gmm.means.shape == (2, 1, 1) and torch.all(gmm.log_weights == 0)
    assert gmm.means[1, 0, 0].item() == 10.0 and gmm.vars[1, 0, 0].item() == 1.0  # old parameters
    assert abs(gmm.means[0, 0, 0].item()) < 0.3  # re-estimated from the 500 frames


@pytest.mark.parametrize("device", DEVICES)
def test_state_dict_round_trip_and_device(device: str) -> None:
    x, labels, _, _ = _xor_data(2000, seed=5)
    gmm = DiagGmm.init_flat(3, x.mean(0), x.var(0))
    gmm.update(_accumulated(gmm, x, labels))
    gmm.mix_up(6)
    buffer = io.BytesIO()
    torch.save(gmm.state_dict(), buffer)
    buffer.seek(0)
    loaded = DiagGmm.from_state_dict(torch.load(buffer, weights_only=True), device=device)
    assert loaded.device.type == device and loaded.num_gauss_per_pdf.tolist() == [2, 2, 2]
    torch.testing.assert_close(loaded.log_likelihoods(x).cpu(), gmm.log_likelihoods(x))
    stats = loaded.new_stats()
    loaded.accumulate(stats, x, labels)  # inputs on the CPU are moved to the model's device
    assert stats.occupancy.device.type == device


def test_num_gauss_schedule_and_realign_iters() -> None:
    schedule = num_gauss_schedule(40, 130, 1000)  # train_mono.sh: 40 iters, 30 increments
    assert len(schedule) == 40 and schedule[:2] == [130, 130] and schedule[2] == 159
    assert schedule[31:] == [1000] * 9 and schedule == sorted(schedule)
    assert realign_iters(40) == list(KALDI_MONO_REALIGN_ITERS) and realign_iters(5) == [1, 2, 3, 4]


def test_bad_inputs_named() -> None:
    gmm = DiagGmm.init_flat(2, torch.zeros(3), torch.ones(3))
    with pytest.raises(ValueError, match="pdf_ids"):
        gmm.accumulate(gmm.new_stats(), torch.zeros(4, 3), torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="3 dims"):
        gmm.log_likelihoods(torch.zeros(4, 5))
    with pytest.raises(ValueError, match="pdf_occupancy"):
        gmm.mix_up(4)


def test_log_likelihoods_of_mixtures_of_many_sizes_match_the_padded_computation() -> None:
    # pdfs of 1..12 components in 12 slots: evaluated in size groups, the result is the padded one
    g = torch.Generator().manual_seed(4)
    num_pdfs, slots, dim = 30, 12, 5
    sizes = torch.randint(1, slots + 1, (num_pdfs,), generator=g)
    sizes[0] = slots
    log_weights = torch.log_softmax(torch.randn(num_pdfs, slots, generator=g), -1)
    log_weights[torch.arange(slots)[None, :] >= sizes[:, None]] = -math.inf
    gmm = DiagGmm(torch.randn(num_pdfs, slots, dim, generator=g), torch.rand(num_pdfs, slots, dim, generator=g) + 0.3,
                  log_weights)
    groups = gmm._size_groups()
    assert len(groups) > 1 and sorted(torch.cat([p for p, _ in groups]).tolist()) == list(range(num_pdfs))
    assert all(int(gmm.num_gauss_per_pdf[p].max()) == m for p, m in groups)
    x = torch.randn(50, dim, generator=g, dtype=torch.float64)
    direct = gmm._log_likelihoods(x)  # one matmul over every slot, padding included
    torch.testing.assert_close(gmm.log_likelihoods(x), direct, rtol=0, atol=1e-9)
    torch.testing.assert_close(gmm.log_likelihoods(x.float()), direct.float(), rtol=1e-5, atol=1e-4)
    assert gmm.log_likelihoods(x[None]).shape == (1, 50, num_pdfs)


def test_accumulate_matches_the_direct_e_step() -> None:
    # mixtures of 1..4 components; frames of every pdf but one, unsorted
    g = torch.Generator().manual_seed(9)
    num_pdfs, slots, dim = 7, 4, 3
    log_weights = torch.log_softmax(torch.randn(num_pdfs, slots, generator=g), -1)
    sizes = torch.tensor([4, 1, 2, 3, 4, 1, 2])
    log_weights[torch.arange(slots)[None, :] >= sizes[:, None]] = -math.inf
    gmm = DiagGmm(torch.randn(num_pdfs, slots, dim, generator=g) * 5 + 40,
                  torch.rand(num_pdfs, slots, dim, generator=g) + 0.5, log_weights)
    labels = torch.randint(0, num_pdfs - 1, (300,), generator=g)
    x = gmm.means[labels, 0] + torch.randn(300, dim, generator=g)
    stats = _accumulated(gmm, x, labels)
    mu, var, lw = gmm.means.double(), gmm.vars.double(), gmm.log_weights.double()
    xd = x.double()
    comp = lw[labels] - 0.5 * (dim * math.log(2 * math.pi) + var[labels].log().sum(-1)
                               + ((xd[:, None] - mu[labels]) ** 2 / var[labels]).sum(-1))
    gamma = (comp - comp.logsumexp(-1, keepdim=True)).exp()  # (T, slots), 0 on unused slots
    occ = torch.zeros(num_pdfs, slots, dtype=torch.float64).index_add_(0, labels, gamma)
    first = torch.zeros(num_pdfs, slots, dim, dtype=torch.float64).index_add_(0, labels, gamma[..., None] * xd[:, None])
    second = torch.zeros(num_pdfs, slots, dim, dtype=torch.float64).index_add_(
        0, labels, gamma[..., None] * xd[:, None] ** 2)
    torch.testing.assert_close(stats.occupancy, occ, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(stats.first, first, rtol=1e-9, atol=1e-7)
    torch.testing.assert_close(stats.second, second, rtol=1e-9, atol=1e-5)
    assert float(stats.log_like) == pytest.approx(float(comp.logsumexp(-1).sum()), rel=1e-10)
    assert float(stats.occupancy[num_pdfs - 1].sum()) == 0.0 and float(stats.occupancy.sum()) == pytest.approx(300)
