import math

import pytest
import torch
import torch.nn.functional as F

from asr_kd.batch import IGNORE_INDEX
from asr_kd.kd.cache import densify_topk, topk_posteriors
from asr_kd.kd.losses import distillation_loss, distillation_terms, sparse_distillation_loss

LN3 = math.log(3.0)


def tiny_batch():
    """B = 1, T = 3 (last frame padding), P = 2.

    Student logits [0, 2 ln 3] on frames 0 and 1:
      q_1 = softmax([0, 2 ln 3]) = [1/10, 9/10];  q_2 = softmax([0, ln 3]) = [1/4, 3/4]
    Soft targets p_2 = [1/2, 1/2] on both frames. Labels 1 and 0, then padding.
    """
    logits = torch.tensor([[[0.0, 2 * LN3], [0.0, 2 * LN3], [5.0, -5.0]]])
    soft = torch.tensor([[[0.5, 0.5], [0.5, 0.5], [0.9, 0.1]]])
    labels = torch.tensor([[1, 0, IGNORE_INDEX]])
    return logits, soft, labels


# KL(p || q_2) = 1/2 ln((1/2)/(1/4)) + 1/2 ln((1/2)/(3/4)) = 1/2 ln 2 + 1/2 ln(2/3) = 1/2 ln(4/3), each frame
KL = 0.5 * math.log(4 / 3)
# CE frame 0 (y = 1): -ln(9/10) = ln(10/9); frame 1 (y = 0): -ln(1/10) = ln 10; mean over the 2 frames
CE = (math.log(10 / 9) + math.log(10)) / 2


def test_hand_computed_value():
    logits, soft, labels = tiny_batch()
    # α = 0.5, T = 2: 0.5 * 4 * KL + 0.5 * CE
    loss = distillation_loss(logits, soft, labels, temperature=2.0, alpha=0.5)
    assert loss.item() == pytest.approx(0.5 * 4 * KL + 0.5 * CE, rel=1e-6)
    terms = distillation_terms(logits, labels, 2.0, 0.5, soft_targets=soft)
    assert terms.kl.item() == pytest.approx(KL, rel=1e-6)
    assert terms.ce.item() == pytest.approx(CE, rel=1e-6)
    assert terms.num_frames == 2


def test_alpha_zero_is_plain_cross_entropy():
    logits, soft, labels = tiny_batch()
    loss = distillation_loss(logits, soft, labels, temperature=2.0, alpha=0.0)
    assert loss.item() == pytest.approx(CE, rel=1e-6)
    expected = F.cross_entropy(logits.view(-1, 2), labels.view(-1), ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(loss, expected)
    # no soft targets needed
    torch.testing.assert_close(distillation_loss(logits, None, labels, 2.0, 0.0), expected)


def test_alpha_one_is_pure_kd_and_t_squared_scaling():
    logits, soft, labels = tiny_batch()
    # α = 1, T = 2: 4 * KL, whatever the labels (none needed)
    loss = distillation_loss(logits, soft, labels, temperature=2.0, alpha=1.0)
    assert loss.item() == pytest.approx(4 * KL, rel=1e-6)
    other_labels = torch.tensor([[0, 1, IGNORE_INDEX]])
    assert distillation_loss(logits, soft, other_labels, 2.0, 1.0).item() == pytest.approx(4 * KL, rel=1e-6)
    mask = labels != IGNORE_INDEX
    assert distillation_loss(logits, soft, None, 2.0, 1.0, mask=mask).item() == pytest.approx(4 * KL, rel=1e-6)
    # the same against torch's KL: F.kl_div(log q_T, p) summed over pdfs, averaged over the 2 frames
    kl_torch = F.kl_div(torch.log_softmax(logits[0, :2] / 2, -1), soft[0, :2], reduction="batchmean")
    torch.testing.assert_close(loss, 4 * kl_torch)


def test_t_squared_on_random_batches():
    torch.manual_seed(0)
    logits, soft = torch.randn(2, 5, 7), torch.softmax(torch.randn(2, 5, 7), -1)
    labels = torch.randint(0, 7, (2, 5))
    for t in (1.0, 2.0, 4.0):
        kl = distillation_terms(logits, labels, t, 1.0, soft_targets=soft).kl
        torch.testing.assert_close(distillation_loss(logits, soft, labels, t, 1.0), t * t * kl)


def test_padding_changes_nothing():
    logits, soft, labels = tiny_batch()
    logits = logits.clone().requires_grad_(True)
    loss = distillation_loss(logits, soft, labels, 2.0, 0.5)
    loss.backward()
    assert logits.grad[0, 2].abs().sum() == 0  # padded frame gets no gradient
    # anything (even nan) on padded frames: same loss
    logits2, soft2 = logits.detach().clone(), soft.clone()
    logits2[0, 2], soft2[0, 2] = float("nan"), float("nan")
    torch.testing.assert_close(distillation_loss(logits2, soft2, labels, 2.0, 0.5), loss.detach())
    # a mask excludes frames the same way
    mask = torch.tensor([[True, True, False]])
    labels_nopad = torch.tensor([[1, 0, 1]])
    torch.testing.assert_close(distillation_loss(logits2, soft2, labels_nopad, 2.0, 0.5, mask=mask), loss.detach())


def test_no_frames_and_sum_reduction():
    logits, soft, labels = tiny_batch()
    none = torch.full_like(labels, IGNORE_INDEX)
    assert distillation_loss(logits, soft, none, 2.0, 0.5).item() == 0.0
    total = distillation_loss(logits, soft, labels, 2.0, 0.5, reduction="sum")
    assert total.item() == pytest.approx(2 * (0.5 * 4 * KL + 0.5 * CE), rel=1e-6)


def test_sparse_hand_computed_remaining_mass():
    # P = 4, k = 2: ids [2, 0] with probs [0.5, 0.3]; the remaining 0.2 goes to pdfs 1 and 3, 0.1 each
    ids, probs = torch.tensor([[2, 0]]), torch.tensor([[0.5, 0.3]])
    torch.testing.assert_close(densify_topk(ids, probs, 4), torch.tensor([[0.3, 0.1, 0.5, 0.1]]))
    # student logits 0 -> q_T uniform 1/4 at any T; KL = sum p ln(4 p)
    # = 0.3 ln 1.2 + 0.1 ln 0.4 + 0.5 ln 2 + 0.1 ln 0.4
    kl = 0.3 * math.log(1.2) + 2 * 0.1 * math.log(0.4) + 0.5 * math.log(2.0)
    logits = torch.zeros(1, 1, 4)
    loss = sparse_distillation_loss(logits, ids[None], probs[None], torch.tensor([[2]]), 3.0, 1.0)
    assert loss.item() == pytest.approx(9 * kl, rel=1e-6)


def test_sparse_with_k_equal_p_matches_dense():
    torch.manual_seed(1)
    logits = torch.randn(2, 6, 9)
    soft = torch.softmax(torch.randn(2, 6, 9) * 2, -1)
    labels = torch.randint(0, 9, (2, 6))
    labels[1, 4:] = IGNORE_INDEX
    ids, probs = topk_posteriors(soft, k=9)
    for alpha in (0.0, 0.3, 1.0):
        dense = distillation_loss(logits, soft, labels, 2.0, alpha)
        sparse = sparse_distillation_loss(logits, ids, probs, labels, 2.0, alpha)
        torch.testing.assert_close(sparse, dense, rtol=1e-6, atol=1e-7)


def test_sparse_equals_dense_on_reconstructed_targets():
    torch.manual_seed(2)
    logits = torch.randn(2, 6, 9, requires_grad=True)
    soft = torch.softmax(torch.randn(2, 6, 9), -1)
    labels = torch.randint(0, 9, (2, 6))
    ids, probs = topk_posteriors(soft, k=3)
    sparse = sparse_distillation_loss(logits, ids, probs, labels, 2.0, 0.7)
    dense = distillation_loss(logits, densify_topk(ids, probs, 9), labels, 2.0, 0.7)
    torch.testing.assert_close(sparse, dense)
    (g_sparse,) = torch.autograd.grad(sparse, logits)
    assert torch.isfinite(g_sparse).all()


@pytest.mark.parametrize("kwargs, message", [
    ({"alpha": 1.5}, "alpha"), ({"temperature": 0.0}, "temperature"), ({"reduction": "none"}, "reduction"),
    ({"labels": None}, "labels are needed"), ({"soft_targets": None}, "needs soft targets"),
    ({"labels": torch.tensor([[0, 7, 1]])}, r"pdf ids in \[0, 2\)"),
    ({"labels": torch.tensor([[0, 1]])}, "labels must have the logits' shape"),
    ({"soft_targets": torch.ones(1, 3, 3) / 3}, "soft_targets must have shape"),
])  # fmt: skip
def test_bad_arguments(kwargs, message):
    logits, soft, labels = tiny_batch()
    args = {"student_logits": logits, "soft_targets": soft, "labels": labels, "temperature": 2.0, "alpha": 0.5}
    with pytest.raises(ValueError, match=message):
        distillation_loss(**{**args, **kwargs})


def mixed_batch():
    """Row 0: the labeled cut of ``tiny_batch``; row 1: an unlabeled cut (transfer set) with the same
    logits and soft targets on its 2 frames, then padding. Its labels are IGNORE_INDEX (none exist)."""
    logits, soft, labels = tiny_batch()
    logits = torch.cat([logits, logits])
    soft = torch.cat([soft, soft])
    labels = torch.cat([labels, torch.full((1, 3), IGNORE_INDEX)])
    soft_only = torch.tensor([[False, False, False], [True, True, False]])
    return logits, soft, labels, soft_only


def test_mixed_labeled_and_unlabeled_frames_by_hand():
    logits, soft, labels, soft_only = mixed_batch()
    # 4 frames take part: 2 labeled (KL + CE), 2 unlabeled (KL only); mean over the 4:
    # (0.5 * 4 * 4 KL + 0.5 * (ln(10/9) + ln 10)) / 4 = 2 KL + CE / 4  (CE is the 2-frame mean above)
    terms = distillation_terms(logits, labels, 2.0, 0.5, soft_targets=soft, soft_only=soft_only)
    assert terms.num_frames == 4 and terms.num_labeled == 2
    assert terms.loss.item() == pytest.approx(2 * KL + CE / 4, rel=1e-6)
    assert terms.kl.item() == pytest.approx(KL, rel=1e-6)  # every frame's KL is KL
    # the unlabeled frames' labels are never read: anything there gives the same loss
    noisy = labels.clone()
    noisy[1, :2] = 1
    again = distillation_loss(logits, soft, noisy, 2.0, 0.5, soft_only=soft_only)
    assert again.item() == pytest.approx(terms.loss.item(), rel=1e-6)
    # the unlabeled cut's gradient is the soft term's alone: 0.5 * T² (q_T - p) / T / N per logit
    z = logits.clone().requires_grad_(True)
    distillation_loss(z, soft, labels, 2.0, 0.5, soft_only=soft_only).backward()
    q2 = torch.tensor([0.25, 0.75])
    expected = 0.5 * 4 * (q2 - torch.tensor([0.5, 0.5])) / 2 / 4
    torch.testing.assert_close(z.grad[1, 0], expected)
    assert torch.all(z.grad[:, 2] == 0)  # padding


def test_unlabeled_frames_need_alpha_above_zero():
    logits, soft, labels, soft_only = mixed_batch()
    with pytest.raises(ValueError, match="unlabeled"):
        distillation_loss(logits, soft, labels, 2.0, 0.0, soft_only=soft_only)
    # alpha = 1: labels play no part, all 4 frames get 4 KL
    assert distillation_loss(logits, soft, labels, 2.0, 1.0, soft_only=soft_only).item() == pytest.approx(4 * KL)
