"""Tests of decision-tree building (asr_kd.hmm.build_tree) and trees (asr_kd.hmm.tree) on hand-made stats.

1-dim features; each context's frames have a known mean and variance, so every split's gain is the
closed form ``sum_leaves -n/2 (log 2 pi + 1 + log var)`` minus the parent's.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from asr_kd.hmm.build_tree import (
    TreeStats,
    accumulate_tree_stats,
    build_tree,
    cluster_phone_questions,
    frame_contexts,
    gauss_objf,
    leaf_gaussians,
)
from asr_kd.hmm.tree import ContextDependency, TreeFileError

LOG_2PI = math.log(2 * math.pi)


def make_stats(
    rows: list[tuple[tuple[int, int, int, int], float, float, float]],
) -> TreeStats:
    """rows: ((left, centre, right, state), count, mean, var) of 1-dim data."""
    keys = np.array([r[0] for r in rows], dtype=np.int64)
    count = np.array([r[1] for r in rows], dtype=np.float64)
    mean = np.array([r[2] for r in rows])
    var = np.array([r[3] for r in rows])
    return TreeStats(
        3, 1, keys, count, (count * mean)[:, None], (count * (var + mean**2))[:, None]
    )


def objf(n: float, var: float) -> float:
    return -0.5 * n * (LOG_2PI + 1 + math.log(var))


QUESTIONS = [
    frozenset({2}),
    frozenset({3}),
    frozenset({4}),
    frozenset({5}),
    frozenset({2, 3}),
    frozenset({4, 5}),
]


def left_dependent_stats() -> TreeStats:
    # root (1, 0): left context 2 -> mean 0, left 3 -> mean 10; the right context (4/5) does not matter
    return make_stats(
        [
            ((2, 1, 4, 0), 100, 0.0, 1.0),
            ((3, 1, 4, 0), 100, 10.0, 1.0),
            ((2, 1, 5, 0), 100, 0.0, 1.0),
            ((3, 1, 5, 0), 100, 10.0, 1.0),
        ]
    )


def test_gauss_objf_closed_form() -> None:
    assert gauss_objf(
        np.array(200.0), np.array([0.0]), np.array([200.0])
    ) == pytest.approx(objf(200, 1.0))
    assert gauss_objf(np.array(0.0), np.array([0.0]), np.array([0.0])) == 0.0


def test_best_split_and_gain_are_the_known_ones() -> None:
    stats = left_dependent_stats()
    tree, info = build_tree(
        stats, QUESTIONS, [(1, 0)], num_leaves=2, min_leaf_count=10, cluster_thresh=None
    )
    # all 400 frames: mean 5, var 51 - 25 = 26; each side of the left question: var 1
    assert info.objf_gain == pytest.approx(2 * objf(200, 1.0) - objf(400, 26.0))
    assert info.objf_gain == pytest.approx(200 * math.log(26.0))
    assert info.num_leaves == 2 and tree.num_pdfs == 2
    node = tree.roots[(1, 0)]
    assert node.pos == 0 and node.phones in (frozenset({2}), frozenset({3}))
    assert (
        tree.pdf([2, 1, 4], 0)
        == tree.pdf([2, 1, 5], 0)
        != tree.pdf([3, 1, 4], 0)
        == tree.pdf([3, 1, 5], 0)
    )


def test_min_leaf_count_stops_the_split() -> None:
    tree, info = build_tree(
        left_dependent_stats(),
        QUESTIONS,
        [(1, 0)],
        num_leaves=10,
        min_leaf_count=201,
        cluster_thresh=None,
    )
    assert (
        info.num_leaves == 1 and info.objf_gain == 0.0 and tree.pdf([3, 1, 5], 0) == 0
    )


def test_splits_go_to_the_largest_gain_over_all_roots() -> None:
    small = make_stats([((2, 6, 4, 0), 100, 0.0, 1.0), ((3, 6, 4, 0), 100, 1.0, 1.0)])
    stats = left_dependent_stats()
    stats = TreeStats(
        3,
        1,
        np.concatenate([stats.keys, small.keys]),
        np.concatenate([stats.count, small.count]),
        np.concatenate([stats.first, small.first]),
        np.concatenate([stats.second, small.second]),
    )
    tree, info = build_tree(
        stats,
        QUESTIONS,
        [(1, 0), (6, 0), (7, 0)],
        num_leaves=4,
        min_leaf_count=10,
        cluster_thresh=None,
    )
    assert (
        info.num_leaves == 4
    )  # root (1, 0) split (gain 651.6), not (6, 0) (gain 100 log 1.25 = 22.3)
    assert tree.pdf([2, 1, 4], 0) != tree.pdf([3, 1, 4], 0)
    assert tree.pdf([2, 6, 4], 0) == tree.pdf([3, 6, 4], 0)
    assert {tree.pdf_phone[p] for p in range(tree.num_pdfs)} == {
        1,
        6,
        7,
    }  # (7, 0): no data, one leaf
    tree, info = build_tree(
        stats,
        QUESTIONS,
        [(1, 0), (6, 0), (7, 0)],
        num_leaves=5,
        min_leaf_count=10,
        cluster_thresh=None,
    )
    assert info.objf_gain == pytest.approx(200 * math.log(26.0) + 100 * math.log(1.25))
    assert tree.pdf([2, 6, 4], 0) != tree.pdf([3, 6, 4], 0)


def test_merging_ties_leaves_that_lose_little() -> None:
    # three left contexts: means 0, 0.1 and 10; two splits make three leaves, merging rejoins 0 and 0.1
    stats = make_stats(
        [
            ((2, 1, 4, 0), 100, 0.0, 1.0),
            ((3, 1, 4, 0), 100, 0.1, 1.0),
            ((5, 1, 4, 0), 100, 10.0, 1.0),
        ]
    )
    questions = [frozenset({2}), frozenset({3}), frozenset({5})]
    tree, info = build_tree(
        stats, questions, [(1, 0)], num_leaves=3, min_leaf_count=10, cluster_thresh=None
    )
    assert info.num_leaves == 3 and tree.num_pdfs == 3
    # merge loss of 0 / 0.1: 200 frames / 2 * log(1 + 0.05^2) = 0.2497 nats
    merged, info = build_tree(
        stats, questions, [(1, 0)], num_leaves=3, min_leaf_count=10, cluster_thresh=1.0
    )
    assert info.num_leaves == 3 and info.num_merged == 1 and merged.num_pdfs == 2
    assert (
        merged.pdf([2, 1, 4], 0) == merged.pdf([3, 1, 4], 0) != merged.pdf([5, 1, 4], 0)
    )
    kept, _ = build_tree(
        stats, questions, [(1, 0)], num_leaves=3, min_leaf_count=10, cluster_thresh=0.24
    )
    assert kept.num_pdfs == 3


def test_questions_from_clustering_separate_the_phone_groups() -> None:
    # phones 2, 3 (means 0, 0.2) against 4, 5 (means 10, 10.3), pooled over contexts
    stats = make_stats(
        [
            ((0, p, 0, 0), 100, m, 1.0)
            for p, m in [(2, 0.0), (3, 0.2), (4, 10.0), (5, 10.3)]
        ]
    )
    questions = cluster_phone_questions(stats, [2, 3, 4, 5, 9], extra=[[0]])
    assert frozenset({2, 3}) in questions and frozenset({4, 5}) in questions
    assert {frozenset({p}) for p in (2, 3, 4, 5)} <= set(questions) and frozenset(
        {0}
    ) in questions
    assert not any(9 in q for q in questions)  # no data


def test_accumulated_stats_and_leaf_gaussians() -> None:
    # monophone pdf map: pdf 0 = (phone 1, state 0), 1 = (1, 1), 2 = (2, 0)
    pdf_phone, pdf_state = [1, 1, 2], [0, 1, 0]
    ali = np.array(
        [0, 0, 1, 2, 2, 0, 1]
    )  # phones 1 2 1: the window of the last is (2, 1, 0)
    x = np.arange(7, dtype=np.float64)[:, None]
    windows, states = frame_contexts(ali, pdf_phone, pdf_state, 3, 1)
    assert windows.tolist() == [[0, 1, 2]] * 3 + [[1, 2, 1]] * 2 + [[2, 1, 0]] * 2
    assert states.tolist() == [0, 0, 1, 0, 0, 0, 1]
    stats = accumulate_tree_stats([ali], [x], pdf_phone, pdf_state)
    got = {
        tuple(k): (c, f[0], s[0])
        for k, c, f, s in zip(
            stats.keys.tolist(), stats.count, stats.first, stats.second
        )
    }
    assert got == {
        (0, 1, 2, 0): (2, 1.0, 1.0),
        (0, 1, 2, 1): (1, 2.0, 4.0),
        (1, 2, 1, 0): (2, 7.0, 25.0),
        (2, 1, 0, 0): (1, 5.0, 25.0),
        (2, 1, 0, 1): (1, 6.0, 36.0),
    }
    tree, _ = build_tree(
        stats,
        [frozenset({0})],
        [(1, 0), (1, 1), (2, 0)],
        num_leaves=3,
        min_leaf_count=1,
    )
    count, first, _ = leaf_gaussians(tree, stats)
    assert sorted(zip(count.tolist(), first[:, 0].tolist())) == [
        (2.0, 7.0),
        (2.0, 8.0),
        (3.0, 6.0),
    ]


def test_tree_round_trip_and_bad_file(tmp_path) -> None:
    tree, _ = build_tree(
        left_dependent_stats(),
        QUESTIONS,
        [(1, 0), (1, 1)],
        num_leaves=3,
        min_leaf_count=10,
    )
    tree.save(tmp_path / "tree.json")
    back = ContextDependency.load(tmp_path / "tree.json")
    assert back.to_json() == tree.to_json()
    for window in ([2, 1, 4], [3, 1, 5], [0, 1, 0]):
        assert back.pdf(window, 0) == tree.pdf(window, 0) and back.pdf(
            window, 1
        ) == tree.pdf(window, 1)
    (tmp_path / "bad.json").write_text('{"format": "asr_kd.tree/1", "roots": 3}')
    with pytest.raises(TreeFileError, match="bad.json"):
        ContextDependency.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="3 phones"):
        tree.pdf([1, 2], 0)


def test_monophone_tree_is_the_lang_pdfs(tmp_path) -> None:
    from asr_kd.data.lang import prepare_lang

    (tmp_path / "lexicon.txt").write_text("a A\nb B\n", encoding="utf-8")
    lang = prepare_lang(
        tmp_path / "lexicon.txt", tmp_path / "lang", num_states=2, num_sil_states=1
    )
    tree = ContextDependency.monophone(lang)
    assert tree.context_width == 1 and tree.num_pdfs == lang.num_pdfs
    for phone in lang.phones:
        assert [
            tree.pdf([lang.phone_to_id[phone]], s)
            for s in range(lang.num_states(phone))
        ] == lang.pdf_ids(phone)
    assert tree.pdf_phone == lang.pdf_to_phone_id.tolist()
