"""Tropical weight pushing of a decoding graph toward its start state (OpenFst's ``fstpush --push_weights``
in the tropical semiring; kaldifst binds no push).

Usage::

    from asr_kd.decode.push import push_weights
    pushed = push_weights(hclg)        # same paths, each state's cheapest way out costs 0

With ``V(s)`` the cost of the cheapest path from state ``s`` to a final state (its final cost included),
every arc ``s -> t`` of cost ``w`` gets ``w + V(t) - V(s)`` and every final cost ``f(s)`` becomes
``f(s) - V(s)``: a path's cost changes by ``-V(start)``, the same for every path, so the best path and
every cost difference are unchanged, while the beam search sees the cost of the best completion as
early as possible (no partial path is pruned for an LM cost that every completion would pay). ``V`` is
computed by Bellman-Ford relaxation over the arcs (costs may be negative: Kneser-Ney back-off weights);
self-loops are left out of ``V`` (their cost is reweighted to itself).
"""

from __future__ import annotations

import math

import numpy as np


def completion_costs(src: np.ndarray, dst: np.ndarray, cost: np.ndarray, final: np.ndarray) -> np.ndarray:
    """``V`` of the module docstring: ``(num_states,)`` float64, inf where no final state is reachable.

    Args:
        src, dst, cost: one entry per arc (self-loops included; they are ignored).
        final: (num_states,) final costs, inf for non-final states.
    """
    keep = src != dst
    src, dst, cost = src[keep], dst[keep], cost[keep].astype(np.float64)
    values = final.astype(np.float64).copy()
    for _ in range(len(final) + 1):
        updated = values.copy()
        np.minimum.at(updated, src, cost + values[dst])
        if np.array_equal(updated, values):
            return values
        values = updated
    raise ValueError("the graph has a cycle of negative cost: its completion costs are unbounded")


def push_weights(fst):
    """A copy of ``fst`` (``kaldifst.StdVectorFst``) with its weights pushed toward the start state; states
    from which no final state is reachable keep their weights."""
    import kaldifst

    n = fst.num_states
    arcs = [(s, a.ilabel, a.olabel, a.weight.value, a.nextstate) for s in range(n) for a in kaldifst.ArcIterator(fst, s)]
    final = np.array([fst.final(s).value for s in range(n)], dtype=np.float64)
    src = np.array([a[0] for a in arcs], dtype=np.int64)
    dst = np.array([a[4] for a in arcs], dtype=np.int64)
    cost = np.array([a[3] for a in arcs], dtype=np.float64)
    values = completion_costs(src, dst, cost, final)
    potential = np.where(np.isfinite(values), values, 0.0)
    out = kaldifst.StdVectorFst()
    for _ in range(n):
        out.add_state()
    out.start = fst.start
    for s in range(n):
        if math.isfinite(final[s]):
            out.set_final(s, float(final[s] - potential[s]))
    for (s, ilabel, olabel, w, t) in arcs:
        out.add_arc(s, kaldifst.StdArc(ilabel, olabel, float(w + potential[t] - potential[s]), t))
    if fst.is_ilabel_sorted:
        kaldifst.arcsort(out, sort_type="ilabel")
    return out
