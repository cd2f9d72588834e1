"""Decision-tree state tying from alignment statistics (Kaldi's acc-tree-stats, cluster-phones, build-tree).

1. :func:`accumulate_tree_stats`: one Gaussian's statistics (count, sum, sum of squares) per seen
   (context window, HMM state), from the frames of the current alignment.
2. :func:`cluster_phone_questions`: the questions, by top-down binary clustering of the phones on their
   pooled statistics (Kaldi's ``cluster-phones``: every node of the clustering tree is a question).
3. :func:`build_tree`: one root per (central phone, HMM state); greedily split the leaf whose best
   question gains most likelihood, over all roots, until ``num_leaves`` leaves or no split gains more
   than ``min_gain`` with at least ``min_leaf_count`` frames on each side; then optionally merge leaves
   of the same root whose merge loses less than ``cluster_thresh`` (Kaldi's ``--cluster-thresh``).

The objective of a set of frames is the log-likelihood of its single ML diagonal Gaussian,
``-count/2 * (D log(2 pi) + D + sum_d log var_d)`` (Kaldi's ``GaussClusterable``, ``var_floor`` 0.01).
"""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from asr_kd.hmm.tree import ContextDependency, Question

logger = logging.getLogger(__name__)

VAR_FLOOR = 0.01  #: Kaldi's GaussClusterable variance floor
_LOG_2PI = math.log(2.0 * math.pi)


@dataclass
class TreeStats:
    """Single-Gaussian statistics per seen (window, HMM state): ``keys`` (K, N + 1) int64 rows
    ``[window..., state]``; ``count`` (K,), ``first`` (K, D), ``second`` (K, D) float64."""

    context_width: int
    central_position: int
    keys: np.ndarray
    count: np.ndarray
    first: np.ndarray
    second: np.ndarray

    @property
    def dim(self) -> int:
        return self.first.shape[1]


def gauss_objf(count, first, second, var_floor: float = VAR_FLOOR):
    """Log-likelihood of the data under its own ML diagonal Gaussian, for stats stacked on axis 0
    (``count`` (...,), ``first``/``second`` (..., D)); 0 where ``count`` is 0."""
    count = np.asarray(count, dtype=np.float64)
    safe = np.maximum(count, 1e-300)[..., None]
    mean = first / safe
    var = np.maximum(second / safe - mean * mean, var_floor)
    dim = first.shape[-1]
    objf = -0.5 * count * (dim * (_LOG_2PI + 1.0) + np.log(var).sum(-1))
    return np.where(count > 0, objf, 0.0)


def frame_windows(
    phone_seq: Sequence[int], context_width: int, central_position: int
) -> np.ndarray:
    """(len(phone_seq), N) context windows of a phone sequence, 0 beyond either end."""
    n = len(phone_seq)
    padded = np.concatenate(
        [
            np.zeros(central_position, np.int64),
            np.asarray(phone_seq, np.int64),
            np.zeros(context_width - 1 - central_position, np.int64),
        ]
    )
    return np.stack([padded[k : k + n] for k in range(context_width)], axis=1)


def phone_segments(
    pdf_ids: np.ndarray, pdf_phone: Sequence[int], pdf_state: Sequence[int]
):
    """Split a frame sequence of pdf ids into phone instances.

    A new phone starts where the phone changes or the HMM state goes back (states are left to right;
    a phone repeated back to back starts again at state 0). Returns ``(phones, seg_index, states)``:
    the phone id of each instance, the instance of each frame (T,), the HMM state of each frame (T,).
    """
    pdf_ids = np.asarray(pdf_ids, dtype=np.int64)
    phone = np.asarray(pdf_phone, dtype=np.int64)[pdf_ids]
    state = np.asarray(pdf_state, dtype=np.int64)[pdf_ids]
    new = np.ones(len(pdf_ids), dtype=bool)
    new[1:] = (phone[1:] != phone[:-1]) | (state[1:] < state[:-1])
    seg = np.cumsum(new) - 1
    return phone[new], seg, state


def frame_contexts(
    pdf_ids: np.ndarray, pdf_phone, pdf_state, context_width: int, central_position: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: its window (T, N) in the aligned phone sequence and its HMM state (T,)."""
    phones, seg, states = phone_segments(pdf_ids, pdf_phone, pdf_state)
    return frame_windows(phones, context_width, central_position)[seg], states


def accumulate_tree_stats(
    alignments: Sequence[np.ndarray],
    feats: Sequence[np.ndarray],
    pdf_phone,
    pdf_state,
    context_width: int = 3,
    central_position: int = 1,
) -> TreeStats:
    """Kaldi's acc-tree-stats: Gaussian statistics per (window, HMM state) of the aligned frames.

    Args:
        alignments: per utterance, (T,) pdf ids of the current model.
        feats: per utterance, (T, D) features.
        pdf_phone, pdf_state: the current model's pdf -> central phone id / HMM state maps.
    """
    keys, xs = [], []
    for ali, x in zip(alignments, feats):
        if len(ali) != len(x):
            raise ValueError(
                f"alignment of {len(ali)} frames for {len(x)} feature frames"
            )
        windows, states = frame_contexts(
            ali, pdf_phone, pdf_state, context_width, central_position
        )
        keys.append(np.concatenate([windows, states[:, None]], axis=1))
        xs.append(np.asarray(x, dtype=np.float64))
    all_keys, x = np.concatenate(keys), np.concatenate(xs)
    uniq, inverse = np.unique(all_keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    count = np.bincount(inverse, minlength=len(uniq)).astype(np.float64)
    first = np.zeros((len(uniq), x.shape[1]))
    second = np.zeros_like(first)
    np.add.at(first, inverse, x)
    np.add.at(second, inverse, x * x)
    return TreeStats(context_width, central_position, uniq, count, first, second)


def _cluster(
    items: list[int],
    count,
    first,
    second,
    rng: np.random.Generator,
    out: list[list[int]],
) -> None:
    """Top-down 2-means of ``items`` (rows of the stats) under the Gaussian objective, recursively."""
    if len(items) < 2:
        return
    idx = np.array(items)
    c, f, s = count[idx], first[idx], second[idx]
    mean = f / np.maximum(c, 1e-300)[:, None]
    centred = mean - (mean * c[:, None]).sum(0) / c.sum()
    direction = np.linalg.svd(centred * np.sqrt(c)[:, None], full_matrices=False)[2][0]
    proj = centred @ direction
    assign = proj > np.median(proj)
    if assign.all() or not assign.any():
        assign = np.arange(len(idx)) < len(idx) // 2
    for _ in range(
        10
    ):  # reassign each item to the cluster that loses least by taking it
        changed = False
        for i in range(len(idx)):
            gains = []
            for side in (False, True):
                members = assign == side
                members[i] = False
                cc, ff, ss = c[members].sum(), f[members].sum(0), s[members].sum(0)
                gains.append(
                    gauss_objf(cc + c[i], ff + f[i], ss + s[i]) - gauss_objf(cc, ff, ss)
                )
            best = bool(np.argmax(gains))
            if best != assign[i] and (assign == assign[i]).sum() > 1:
                assign[i], changed = best, True
        if not changed:
            break
    for side in (True, False):
        part = [int(v) for v in idx[assign == side]]
        out.append(part)
        _cluster(part, count, first, second, rng, out)


def cluster_phone_questions(
    stats: TreeStats,
    phones: Sequence[int],
    extra: Sequence[Sequence[int]] = (),
    seed: int = 0,
) -> list[frozenset[int]]:
    """Questions (phone sets) from top-down clustering of ``phones`` on their pooled statistics.

    Each phone's statistics are pooled over contexts; phones are compared by all their HMM states at
    once (the per-state Gaussians' objectives add). Every cluster of the resulting binary tree (down to
    single phones) is a question; ``extra`` sets (e.g. silence phones, ``{0}`` for "no phone") are added.
    Phones without data join no question but ``extra``'s.
    """
    central = stats.keys[:, stats.central_position]
    state = stats.keys[:, -1]
    num_states = int(state.max()) + 1
    phones = [int(p) for p in phones]
    dim = stats.dim
    count = np.zeros((len(phones), num_states))
    first = np.zeros((len(phones), num_states * dim))
    second = np.zeros_like(first)
    for i, p in enumerate(phones):
        for s in range(num_states):
            rows = (central == p) & (state == s)
            count[i, s] = stats.count[rows].sum()
            first[i, s * dim : (s + 1) * dim] = stats.first[rows].sum(0)
            second[i, s * dim : (s + 1) * dim] = stats.second[rows].sum(0)
    # stack states as independent dims: objective of a cluster = sum over states (same count per block
    # only approximately; weight each phone by its total count)
    seen = [i for i in range(len(phones)) if count[i].sum() > 0]
    total = count.sum(1)
    # per-state normalisation: the states' means, each weighted by the phone's frames
    norm_first = np.concatenate(
        [
            first[:, s * dim : (s + 1) * dim]
            / np.maximum(count[:, s : s + 1], 1e-300)
            * total[:, None]
            for s in range(num_states)
        ],
        1,
    )
    norm_second = np.concatenate(
        [
            second[:, s * dim : (s + 1) * dim]
            / np.maximum(count[:, s : s + 1], 1e-300)
            * total[:, None]
            for s in range(num_states)
        ],
        1,
    )
    clusters: list[list[int]] = [list(seen)]
    _cluster(
        list(seen),
        total,
        norm_first,
        norm_second,
        np.random.default_rng(seed),
        clusters,
    )
    questions = {frozenset(phones[i] for i in c) for c in clusters if c}
    questions |= {frozenset(int(p) for p in e) for e in extra if len(e)}
    return sorted(questions, key=lambda q: (len(q), sorted(q)))


@dataclass(order=True)
class _Split:
    neg_gain: float
    leaf: int = field(compare=False)
    pos: int = field(compare=False)
    question: int = field(compare=False)


@dataclass
class TreeBuildInfo:
    num_roots: int
    num_leaves: int
    num_pdfs: int
    objf_gain: float  #: total log-likelihood gain of the splits
    min_split_gain: float  #: the smallest gain of a split taken
    num_merged: int
    frames: float

    def as_dict(self) -> dict:
        return self.__dict__.copy()


class _Builder:
    def __init__(
        self,
        stats: TreeStats,
        questions: Sequence[frozenset[int]],
        min_leaf_count: float,
    ) -> None:
        self.stats = stats
        self.min_leaf_count = float(min_leaf_count)
        num_values = int(stats.keys[:, : stats.context_width].max()) + 1
        for q in questions:
            num_values = max(num_values, max(q) + 1)
        self.membership = np.zeros((len(questions), num_values))
        for k, q in enumerate(questions):
            self.membership[k, sorted(q)] = 1.0
        self.questions = list(questions)
        self.positions = [
            k for k in range(stats.context_width) if k != stats.central_position
        ]
        self.num_values = num_values

    def totals(self, rows: np.ndarray):
        s = self.stats
        return s.count[rows].sum(), s.first[rows].sum(0), s.second[rows].sum(0)

    def best_split(self, rows: np.ndarray) -> tuple[float, int, int]:
        """(gain, position, question index) of the best allowed split of ``rows``; gain -inf if none."""
        s = self.stats
        count, first, second = self.totals(rows)
        base = gauss_objf(count, first, second)
        best = (-math.inf, -1, -1)
        for pos in self.positions:
            values = s.keys[rows, pos]
            c = np.bincount(values, weights=s.count[rows], minlength=self.num_values)
            f = np.zeros((self.num_values, s.dim))
            q2 = np.zeros_like(f)
            np.add.at(f, values, s.first[rows])
            np.add.at(q2, values, s.second[rows])
            yc, yf, ys = self.membership @ c, self.membership @ f, self.membership @ q2
            nc = count - yc
            ok = (yc >= self.min_leaf_count) & (nc >= self.min_leaf_count)
            if not ok.any():
                continue
            gain = (
                gauss_objf(yc, yf, ys) + gauss_objf(nc, first - yf, second - ys) - base
            )
            gain = np.where(ok, gain, -math.inf)
            k = int(np.argmax(gain))
            if gain[k] > best[0]:
                best = (float(gain[k]), pos, k)
        return best


def build_tree(
    stats: TreeStats,
    questions: Sequence[frozenset[int]],
    roots: Sequence[tuple[int, int]],
    num_leaves: int,
    min_leaf_count: float = 100.0,
    min_gain: float = 0.0,
    cluster_thresh: float | None = None,
    info: dict | None = None,
) -> tuple[ContextDependency, TreeBuildInfo]:
    """Kaldi's build-tree: greedy likelihood-gain splitting to ``num_leaves`` leaves (see module doc).

    Args:
        stats: from :func:`accumulate_tree_stats`.
        questions: phone sets asked about at every non-central window position.
        roots: every (central phone id, HMM state) the tree must cover; those without data stay one leaf.
        num_leaves: the most leaves (at least one per root).
        min_leaf_count: frames each side of a split needs.
        min_gain: a split must gain more than this (log-likelihood).
        cluster_thresh: merge leaves of a root while the cheapest merge loses less than this; None: no
            merging; a negative value: the smallest gain of the splits taken (Kaldi's default -1).

    Returns:
        The tree (pdf ids numbered root by root) and what was done.
    """
    builder = _Builder(stats, questions, min_leaf_count)
    central, state = stats.keys[:, stats.central_position], stats.keys[:, -1]
    leaf_rows: list[np.ndarray] = []
    leaf_root: list[tuple[int, int]] = []
    root_nodes: dict[tuple[int, int], object] = {}
    heap: list[_Split] = []
    for root in roots:
        rows = np.flatnonzero((central == root[0]) & (state == root[1]))
        leaf = len(leaf_rows)
        leaf_rows.append(rows)
        leaf_root.append(tuple(root))
        root_nodes[tuple(root)] = leaf
        if len(rows):
            gain, pos, q = builder.best_split(rows)
            if gain > min_gain:
                heapq.heappush(heap, _Split(-gain, leaf, pos, q))
    # a leaf id is replaced by a Question when split: keep each leaf's place via parent links
    parent: dict[int, tuple[Question | None, str]] = {
        leaf: (None, "") for leaf in range(len(leaf_rows))
    }
    total_gain, min_split = 0.0, math.inf
    num = len(leaf_rows)
    while heap and num < num_leaves:
        split = heapq.heappop(heap)
        rows = leaf_rows[split.leaf]
        values = stats.keys[rows, split.pos]
        qset = builder.questions[split.question]
        is_yes = np.isin(values, list(qset))
        yes, no = len(leaf_rows), len(leaf_rows) + 1
        leaf_rows += [rows[is_yes], rows[~is_yes]]
        leaf_root += [leaf_root[split.leaf]] * 2
        node = Question(split.pos, qset, yes, no)
        up, branch = parent[split.leaf]
        if up is None:
            root_nodes[leaf_root[split.leaf]] = node
        else:
            setattr(up, branch, node)
        parent[yes], parent[no] = (node, "yes"), (node, "no")
        leaf_rows[split.leaf] = np.empty(0, dtype=np.int64)
        del parent[split.leaf]
        total_gain += -split.neg_gain
        min_split = min(min_split, -split.neg_gain)
        num += 1
        for leaf in (yes, no):
            gain, pos, q = builder.best_split(leaf_rows[leaf])
            if gain > min_gain:
                heapq.heappush(heap, _Split(-gain, leaf, pos, q))
    live = sorted(parent)  # leaves still in the tree, in creation order
    # merging within each root
    group = {leaf: leaf for leaf in live}
    num_merged = 0
    if cluster_thresh is not None:
        thresh = (
            (min_split if math.isfinite(min_split) else 0.0)
            if cluster_thresh < 0
            else cluster_thresh
        )
        num_merged = _merge_leaves(live, leaf_rows, leaf_root, builder, thresh, group)
    # number pdfs root by root (sorted roots), groups in order of first leaf
    pdf_of_group: dict[int, int] = {}
    for root in sorted(root_nodes):
        for leaf in _leaf_ids(root_nodes[root]):
            g = group[leaf]
            if g not in pdf_of_group:
                pdf_of_group[g] = len(pdf_of_group)
    final_roots = {
        root: _relabel(node, lambda leaf: pdf_of_group[group[leaf]])
        for root, node in root_nodes.items()
    }
    tree = ContextDependency(
        stats.context_width, stats.central_position, final_roots, info
    )
    build_info = TreeBuildInfo(
        len(root_nodes),
        len(live),
        tree.num_pdfs,
        total_gain,
        min_split if math.isfinite(min_split) else 0.0,
        num_merged,
        float(stats.count.sum()),
    )
    tree.info["build"] = build_info.as_dict()
    logger.info(
        "tree: %d roots, %d leaves, %d pdfs, gain %.1f (%.3f/frame), %d merged",
        build_info.num_roots,
        build_info.num_leaves,
        build_info.num_pdfs,
        total_gain,
        total_gain / max(build_info.frames, 1.0),
        num_merged,
    )
    return tree, build_info


def _leaf_ids(node) -> list[int]:
    if isinstance(node, Question):
        return _leaf_ids(node.yes) + _leaf_ids(node.no)
    return [node]


def _relabel(node, fn):
    if isinstance(node, Question):
        return Question(
            node.pos, node.phones, _relabel(node.yes, fn), _relabel(node.no, fn)
        )
    return fn(node)


def _merge_leaves(
    live, leaf_rows, leaf_root, builder: _Builder, thresh: float, group: dict[int, int]
) -> int:
    """Greedy bottom-up merging of the leaves of each root while a merge loses less than ``thresh``."""
    merged = 0
    by_root: dict[tuple[int, int], list[int]] = {}
    for leaf in live:
        by_root.setdefault(leaf_root[leaf], []).append(leaf)
    for leaves in by_root.values():
        clusters = {leaf: builder.totals(leaf_rows[leaf]) for leaf in leaves}
        while len(clusters) > 1:
            keys = list(clusters)
            objf = {k: gauss_objf(*clusters[k]) for k in keys}
            best = (math.inf, None, None)
            for i, a in enumerate(keys):
                for b in keys[i + 1 :]:
                    ca, cb = clusters[a], clusters[b]
                    loss = (
                        objf[a]
                        + objf[b]
                        - gauss_objf(ca[0] + cb[0], ca[1] + cb[1], ca[2] + cb[2])
                    )
                    if loss < best[0]:
                        best = (loss, a, b)
            if best[0] >= thresh:
                break
            _, a, b = best
            ca, cb = clusters.pop(b), clusters[a]
            clusters[a] = (ca[0] + cb[0], ca[1] + cb[1], ca[2] + cb[2])
            for leaf, g in group.items():
                if g == b:
                    group[leaf] = a
            merged += 1
    return merged


def leaf_gaussians(
    tree: ContextDependency, stats: TreeStats
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pdf of ``tree``: (count (P,), first (P, D), second (P, D)) of the ``stats`` it covers
    (Kaldi's gmm-init-model initialises each pdf's Gaussian from them)."""
    count = np.zeros(tree.num_pdfs)
    first = np.zeros((tree.num_pdfs, stats.dim))
    second = np.zeros_like(first)
    width = stats.context_width
    for k, key in enumerate(stats.keys):
        pdf = tree.pdf(key[:width], key[width])
        count[pdf] += stats.count[k]
        first[pdf] += stats.first[k]
        second[pdf] += stats.second[k]
    return count, first, second
