"""Frame splicing, LDA and MLLT feature transforms (Kaldi's splice-feats, est-lda, est-mllt), in torch.

- :func:`splice`: each frame with its ``context`` neighbours on both sides (edges replicated), as
  Kaldi's ``splice-feats --left-context=c --right-context=c``.
- :func:`estimate_lda`: from per-class counts, sums and the total scatter: the ``dim`` x D matrix ``M``
  with ``M W M^T = I`` (W: within-class covariance) and ``M B M^T`` diagonal, decreasing (B:
  between-class covariance), Kaldi's ``LdaEstimate`` (no offset, no extra normalisation).
- :func:`estimate_mllt`: the square transform ``A`` maximising the likelihood of diagonal Gaussians
  after ``x -> A x`` (Gales' semi-tied covariances; Kaldi's ``MlltAccs::Update``): row by row,
  ``a_i = c_i G_i^-1 sqrt(beta / (c_i G_i^-1 c_i^T))`` with ``c_i`` the cofactor row of ``A``,
  ``G_i = sum_m S_m / var_mi`` (S_m: scatter of Gaussian m around its mean) and ``beta`` the frames.
  The objective ``beta log|det A| - 1/2 sum_i a_i G_i a_i^T`` never decreases.
"""

from __future__ import annotations

import torch


def splice(x: torch.Tensor, context: int) -> torch.Tensor:
    """(T, D) -> (T, (2 context + 1) D): frames t-context .. t+context, edge frames repeated."""
    if context == 0:
        return x
    num_frames = x.shape[0]
    index = (
        torch.arange(num_frames)[:, None] + torch.arange(-context, context + 1)[None, :]
    )
    return x[index.clamp(0, num_frames - 1)].reshape(num_frames, -1)


class LdaStats:
    """Per-class zeroth and first order statistics and the total scatter (float64)."""

    def __init__(self, num_classes: int, dim: int) -> None:
        self.count = torch.zeros(num_classes, dtype=torch.float64)
        self.first = torch.zeros(num_classes, dim, dtype=torch.float64)
        self.scatter = torch.zeros(dim, dim, dtype=torch.float64)

    def add(
        self,
        x: torch.Tensor,
        classes: torch.Tensor,
        weights: torch.Tensor | None = None,
    ) -> None:
        """Frames ``x`` (T, D) of ``classes`` (T,), with optional per-frame ``weights`` (T,)."""
        x = x.double()
        w = (
            torch.ones(x.shape[0], dtype=torch.float64)
            if weights is None
            else weights.double()
        )
        self.count.index_add_(0, classes.long(), w)
        self.first.index_add_(0, classes.long(), x * w[:, None])
        self.scatter += (x * w[:, None]).T @ x


def estimate_lda(stats: LdaStats, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The LDA matrix (dim, D) and the between-class eigenvalues (dim,), see the module docstring."""
    used = stats.count > 0
    count, first = stats.count[used], stats.first[used]
    if dim > min(stats.first.shape[1], int(used.sum()) - 1):
        raise ValueError(
            f"LDA to {dim} dims needs at least {dim + 1} classes with data and {dim} input "
            f"dims, got {int(used.sum())} classes and {stats.first.shape[1]} dims"
        )
    total = count.sum()
    mean = first.sum(0) / total
    total_cov = stats.scatter / total - torch.outer(mean, mean)
    class_means = first / count[:, None]
    centred = class_means - mean
    between = (centred * count[:, None]).T @ centred / total
    within = total_cov - between
    within = 0.5 * (within + within.T)
    # a tiny ridge keeps the Cholesky defined when some dims carry (almost) no within-class variance
    within = within + 1e-6 * within.diagonal().mean().clamp_min(1e-12) * torch.eye(len(within), dtype=within.dtype)
    chol = torch.linalg.cholesky(within)
    chol_inv = torch.linalg.inv(chol)
    sym = chol_inv @ between @ chol_inv.T
    eigvals, eigvecs = torch.linalg.eigh(0.5 * (sym + sym.T))
    order = torch.argsort(eigvals, descending=True)[:dim]
    return eigvecs[:, order].T @ chol_inv, eigvals[order]


def mllt_stats(scatter: torch.Tensor, variances: torch.Tensor) -> torch.Tensor:
    """G (D, D, D): ``G[i] = sum_m scatter[m] / variances[m, i]``. scatter (M, D, D), variances (M, D)."""
    return torch.einsum("mi,mde->ide", 1.0 / variances.double(), scatter.double())


def mllt_objf(transform: torch.Tensor, g: torch.Tensor, beta: float) -> float:
    """``beta log|det A| - 1/2 sum_i a_i G_i a_i^T``: the MLLT auxiliary function (up to a constant)."""
    a = transform.double()
    return float(
        beta * torch.linalg.slogdet(a)[1] - 0.5 * torch.einsum("id,ide,ie->", a, g, a)
    )


def estimate_mllt(
    g: torch.Tensor, beta: float, num_iters: int = 10, init: torch.Tensor | None = None
) -> torch.Tensor:
    """The MLLT matrix (D, D) from :func:`mllt_stats` and ``beta`` frames (row-by-row updates)."""
    dim = g.shape[0]
    a = torch.eye(dim, dtype=torch.float64) if init is None else init.double().clone()
    g_inv = torch.linalg.inv(g.double())
    for _ in range(num_iters):
        for i in range(dim):
            cof = torch.linalg.inv(a).T[
                i
            ]  # the cofactor row up to det(A): the update ignores scale
            gc = cof @ g_inv[i]
            a[i] = gc * torch.sqrt(beta / (gc @ cof))
    return a
