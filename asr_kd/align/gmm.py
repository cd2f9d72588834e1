"""Monophone acoustic model of the flat-start aligner: one diagonal-covariance GMM per pdf, in torch.

Kaldi's ``train_mono.sh`` Viterbi training, batched and device-agnostic (CPU or CUDA)::

    gmm = DiagGmm.init_flat(num_pdfs, feats.mean(0), feats.var(0))        # gmm-init-mono
    for it, total in enumerate(num_gauss_schedule(num_iters, num_pdfs, 1000)):
        if it in realign_iters(num_iters): ...  # Viterbi realignment with gmm.log_likelihoods(x)
        stats = gmm.new_stats()
        for x, pdf_ids in batches:                                       # gmm-acc-stats-ali
            gmm.accumulate(stats, x, pdf_ids)                            # (T, D), (T,)
        # (DDP: all_reduce every tensor of stats.tensors())
        gmm.update(stats)                                                # gmm-est ...
        gmm.mix_up(total)                                                # ... --mix-up=total

Layout: ``P`` pdfs, up to ``M`` components each, ``D`` feature dims. Pdf ``p`` uses components
``0 .. num_gauss_per_pdf[p] - 1``; padding slots have ``log_weights = -inf`` (mean 0, var 1).
Parameters are float32; statistics and re-estimation are float64.
"""

from __future__ import annotations

import heapq
import logging
import math
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

MIN_GAUSS_OCCUPANCY = 10.0  # frames; Kaldi gmm-est --min-gaussian-occupancy (train_mono: 3 at iter 0)
MIN_GAUSS_WEIGHT = 1e-5  # Kaldi gmm-est --min-gaussian-weight
VAR_FLOOR_FACTOR = 0.01  # variance floor = factor * global variance of the accumulated frames
MIN_VARIANCE = 1e-6  # absolute floor, only guards constant feature dims against division by 0
MIX_UP_POWER = 0.2  # Kaldi gmm-est --power (train_mono.sh passes 0.25)
MIX_UP_MIN_COUNT = 20.0  # frames per Gaussian below which a pdf is not split (gmm-est --min-count)
PERTURB_FACTOR = 0.2  # split means = mean +- factor * std * (random unit-normal direction)
KALDI_MONO_REALIGN_ITERS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 18, 20, 23, 26, 29, 32, 35, 38)
_CHUNK_ELEMENTS = 1 << 24  # bounds the (frames, components, dims) intermediates
_LOG_2PI = math.log(2.0 * math.pi)


@dataclass
class GmmStats:
    """Sufficient statistics for a :class:`DiagGmm` (float64). Add batches with :meth:`add_`, and
    processes by ``all_reduce`` of every tensor in :meth:`tensors`. Made by ``DiagGmm.new_stats``."""

    occupancy: torch.Tensor  # (P, M) sum of responsibilities, in frames
    first: torch.Tensor  # (P, M, D) sum of gamma * x
    second: torch.Tensor  # (P, M, D) sum of gamma * x^2
    log_like: torch.Tensor  # () sum over frames of log p(x_t | pdf_t)

    @classmethod
    def zeros(
        cls, num_pdfs: int, max_gauss: int, dim: int, device: torch.device | str | None = None
    ) -> GmmStats:
        """Empty statistics of shape (num_pdfs, max_gauss[, dim])."""
        kw = dict(dtype=torch.float64, device=device)
        return cls(
            torch.zeros(num_pdfs, max_gauss, **kw),
            torch.zeros(num_pdfs, max_gauss, dim, **kw),
            torch.zeros(num_pdfs, max_gauss, dim, **kw),
            torch.zeros((), **kw),
        )

    def tensors(self) -> list[torch.Tensor]:
        """All statistics, e.g. for ``torch.distributed.all_reduce``."""
        return [self.occupancy, self.first, self.second, self.log_like]

    def add_(self, other: GmmStats) -> GmmStats:
        """In-place sum with ``other`` (same shapes); returns self."""
        for mine, theirs in zip(self.tensors(), other.tensors()):
            mine.add_(theirs.to(mine.device))
        return self

    @property
    def num_frames(self) -> float:
        return float(self.occupancy.sum())

    def pdf_occupancy(self) -> torch.Tensor:
        """(P,) frames per pdf."""
        return self.occupancy.sum(1)

    def global_mean_var(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance (D,) of all accumulated frames, float64."""
        count = self.occupancy.sum().clamp_min(1e-300)
        mean = self.first.sum((0, 1)) / count
        return mean, (self.second.sum((0, 1)) / count - mean**2).clamp_min(0.0)


@dataclass
class UpdateInfo:
    """What one :meth:`DiagGmm.update` did."""

    num_frames: float
    avg_log_like: float  # per frame, under the model the statistics were accumulated with
    num_pdfs_no_data: int  # pdfs left unchanged
    num_gauss_removed: int  # components under the occupancy / weight minimum
    num_vars_floored: int  # (component, dim) pairs set to the variance floor
    total_gauss: int


class DiagGmm:
    """P diagonal GMMs of up to M components. means, vars: (P, M, D); log_weights: (P, M).

    ``center`` (D,) is subtracted from features and means before the quadratic form of
    :meth:`log_likelihoods`, for float32 precision (default: the mean of the pdfs' first means; the
    global mean after :meth:`init_flat`).
    """

    def __init__(
        self,
        means: torch.Tensor,
        vars: torch.Tensor,
        log_weights: torch.Tensor,
        num_gauss_per_pdf: torch.Tensor | None = None,
        center: torch.Tensor | None = None,
    ) -> None:
        if means.dim() != 3 or vars.shape != means.shape or log_weights.shape != means.shape[:2]:
            raise ValueError(
                "need means, vars (P, M, D) and log_weights (P, M), got "
                f"{tuple(means.shape)}, {tuple(vars.shape)}, {tuple(log_weights.shape)}"
            )
        self.means, self.vars = means.float(), vars.float()
        self.log_weights = log_weights.float()
        if num_gauss_per_pdf is None:
            num_gauss_per_pdf = torch.isfinite(self.log_weights).sum(1)
        self.num_gauss_per_pdf = num_gauss_per_pdf.to(self.means.device, torch.long)
        if center is None:  # any point near the data will do; component 0 is used by every pdf
            center = self.means[:, 0].double().mean(0)
        self.center = center.to(self.means)
        self.pdf_occupancy: torch.Tensor | None = None  # (P,) float64, set by update() for mix_up()

    @classmethod
    def init_flat(cls, num_pdfs: int, global_mean: torch.Tensor, global_var: torch.Tensor) -> DiagGmm:
        """Every pdf = the one global Gaussian (Kaldi's gmm-init-mono). global_mean, global_var: (D,)."""
        var = global_var.float().clamp_min(MIN_VARIANCE)
        return cls(
            global_mean.float().expand(num_pdfs, 1, -1).clone(),
            var.expand(num_pdfs, 1, -1).clone(),
            torch.zeros(num_pdfs, 1, device=var.device),
            center=global_mean.float(),
        )

    @property
    def num_pdfs(self) -> int:
        return self.means.shape[0]

    @property
    def max_gauss(self) -> int:
        """M: component slots per pdf (the largest num_gauss_per_pdf)."""
        return self.means.shape[1]

    @property
    def dim(self) -> int:
        return self.means.shape[2]

    @property
    def device(self) -> torch.device:
        return self.means.device

    @property
    def total_gauss(self) -> int:
        return int(self.num_gauss_per_pdf.sum())

    def new_stats(self) -> GmmStats:
        """Zero statistics shaped for this model (make new ones after update / mix_up)."""
        return GmmStats.zeros(self.num_pdfs, self.max_gauss, self.dim, self.device)

    def _log_consts(self) -> torch.Tensor:
        """(P, M) float64: log w - 0.5 (D log 2 pi + sum_d log var); -inf for unused components."""
        return self.log_weights.double() - 0.5 * (self.dim * _LOG_2PI + self.vars.double().log().sum(-1))

    def log_likelihoods(self, x: torch.Tensor) -> torch.Tensor:
        """log sum_m w_pm N(x; mu_pm, diag var_pm) for every pdf p. x: (..., D) -> (..., P).

        One matmul over all P*M components, ``[xc^2, xc] @ [-ivar / 2, mu_c ivar]^T + gconst`` with
        ``xc = x - center``, then logsumexp over components; pdfs are evaluated in groups of similar
        mixture size when padding would be over a quarter of the slots. float32 (float64 for float64 input; the
        matmul runs in float64 where CUDA float32 matmuls are set to TF32, which is too coarse here).
        """
        if x.shape[-1] != self.dim:
            raise ValueError(f"features must have {self.dim} dims, got shape {tuple(x.shape)}")
        groups = self._size_groups()
        if len(groups) > 1:  # pdfs of similar mixture sizes together: no matmul over padding slots
            out = torch.empty(*x.shape[:-1], self.num_pdfs, dtype=torch.promote_types(x.dtype, torch.float32),
                              device=self.device)
            for pdfs, m in groups:
                out[..., pdfs] = self._trimmed(pdfs, m)._log_likelihoods(x)
            return out
        return self._log_likelihoods(x)

    def _size_groups(self) -> list[tuple[torch.Tensor, int]]:
        """The pdfs in groups of similar mixture size (bucket edges 1, 2, 3, 4, 6, 8, 12, 16, ...), each with
        its largest size; one group when padding slots are under a quarter of all slots."""
        counts = self.num_gauss_per_pdf.clamp_min(1)
        if self.num_pdfs * self.max_gauss * 0.75 <= int(counts.sum()):
            return [(torch.arange(self.num_pdfs, device=self.device), self.max_gauss)]
        edges = sorted({e for k in range(self.max_gauss.bit_length() + 1) for e in (2**k, 3 * 2**k // 2)
                        if 0 < e < self.max_gauss} | {self.max_gauss})
        bucket = torch.bucketize(counts, torch.tensor(edges, device=counts.device))
        groups = []
        for b in torch.unique(bucket).tolist():
            pdfs = torch.nonzero(bucket == b).view(-1)
            groups.append((pdfs, int(counts[pdfs].max())))
        return groups

    def _trimmed(self, pdfs: torch.Tensor, m: int) -> DiagGmm:
        """The GMMs of ``pdfs`` in ``m`` component slots, centred like this model."""
        return DiagGmm(self.means[pdfs, :m], self.vars[pdfs, :m], self.log_weights[pdfs, :m],
                       self.num_gauss_per_pdf[pdfs], self.center)

    def _log_likelihoods(self, x: torch.Tensor) -> torch.Tensor:
        dtype = torch.float64 if x.dtype == torch.float64 or _tf32_matmul(self.device) else torch.float32
        num_pdfs, max_gauss = self.num_pdfs, self.max_gauss
        ivar = 1.0 / self.vars.double()
        mu_c = self.means.double() - self.center.double()
        gconst = (self._log_consts() - 0.5 * (mu_c**2 * ivar).sum(-1)).reshape(-1).to(dtype)
        proj = torch.cat([-0.5 * ivar, mu_c * ivar], -1).reshape(num_pdfs * max_gauss, -1).to(dtype)
        xc = x.reshape(-1, self.dim).to(self.device, dtype) - self.center.to(dtype)
        out = torch.empty(xc.shape[0], num_pdfs, dtype=dtype, device=self.device)
        step = max(1, _CHUNK_ELEMENTS // (num_pdfs * max_gauss))
        for start in range(0, xc.shape[0], step):
            chunk = xc[start : start + step]
            comp = torch.addmm(gconst, torch.cat([chunk * chunk, chunk], -1), proj.T)
            out[start : start + step] = comp.view(-1, num_pdfs, max_gauss).logsumexp(-1)
        return out.view(*x.shape[:-1], num_pdfs).to(torch.promote_types(x.dtype, torch.float32))

    def accumulate(self, stats: GmmStats, x: torch.Tensor, pdf_ids: torch.Tensor) -> None:
        """Add the statistics of frames ``x`` (T, D) labelled ``pdf_ids`` (T,) to ``stats`` (in place).

        E-step within the labelled pdf: responsibilities over its components only, then zeroth, first
        and second order statistics; the frames are sorted by pdf and each pdf's are done as matmuls.
        """
        if x.dim() != 2 or x.shape[1] != self.dim or pdf_ids.shape != x.shape[:1]:
            raise ValueError(
                f"need x (T, {self.dim}) and pdf_ids (T,), got {tuple(x.shape)}, {tuple(pdf_ids.shape)}"
            )
        self._check_stats(stats)
        if x.shape[0] == 0:
            return
        x, pdf_ids = x.to(self.device, torch.float32), pdf_ids.to(self.device, torch.long)
        low, high = int(pdf_ids.min()), int(pdf_ids.max())
        if low < 0 or high >= self.num_pdfs:
            raise ValueError(f"pdf_ids must lie in [0, {self.num_pdfs}), got [{low}, {high}]")
        # frames sorted by pdf: per pdf, (n, m) responsibilities over its own m components and the
        # statistics as matmuls; float64 throughout
        order = torch.argsort(pdf_ids, stable=True)
        xs = x[order].double()
        counts = torch.bincount(pdf_ids, minlength=self.num_pdfs).tolist()
        log_consts, ivar = self._log_consts(), 1.0 / self.vars.double()
        means, num_gauss = self.means.double(), self.num_gauss_per_pdf.tolist()
        log_like = torch.zeros((), dtype=torch.float64, device=self.device)
        begin = 0
        for pdf, n in enumerate(counts):
            if n == 0:
                continue
            xp, m = xs[begin : begin + n], max(1, num_gauss[pdf])
            begin += n
            mu, iv = means[pdf, :m], ivar[pdf, :m]  # (m, D)
            # -0.5 sum_d (x - mu)^2 / var = x^2 @ (-iv / 2)^T + x @ (mu iv)^T - 0.5 sum_d mu^2 iv
            comp = (xp * xp) @ (-0.5 * iv).T + xp @ (mu * iv).T + (log_consts[pdf, :m] - 0.5 * (mu * mu * iv).sum(-1))
            frame_ll = comp.logsumexp(-1)
            log_like += frame_ll.sum()
            gamma = (comp - frame_ll[:, None]).exp()  # (n, m)
            stats.occupancy[pdf, :m] += gamma.sum(0)
            stats.first[pdf, :m] += gamma.T @ xp
            stats.second[pdf, :m] += gamma.T @ (xp * xp)
        stats.log_like += log_like

    def _check_stats(self, stats: GmmStats) -> None:
        if stats.first.shape != self.means.shape:
            raise ValueError(
                f"stats {tuple(stats.first.shape)} do not match the model {tuple(self.means.shape)}: "
                "make them with new_stats() after the last update / mix_up"
            )

    def update(
        self,
        stats: GmmStats,
        min_gauss_occupancy: float = MIN_GAUSS_OCCUPANCY,
        min_gauss_weight: float = MIN_GAUSS_WEIGHT,
        var_floor_factor: float = VAR_FLOOR_FACTOR,
    ) -> UpdateInfo:
        """Maximum-likelihood re-estimation (Kaldi's MleDiagGmmUpdate), in place.

        - A component with occupancy > ``min_gauss_occupancy`` and weight > ``min_gauss_weight`` gets
          new mean, variance (floored at ``var_floor_factor`` * global variance of the accumulated
          frames, at least MIN_VARIANCE) and weight = its share of the pdf's occupancy.
        - Other components are removed; if none of a pdf's qualifies, its most occupied one is kept with
          its previous mean and variance (Kaldi keeps one too) and weight 1.
        - A pdf with no frames keeps all its parameters (counted, warned about).
        """
        self._check_stats(stats)
        tiny = 1e-300
        num_pdfs, max_gauss = self.num_pdfs, self.max_gauss
        active = torch.arange(max_gauss, device=self.device) < self.num_gauss_per_pdf[:, None]
        occ = stats.occupancy.to(self.device) * active
        pdf_occ = occ.sum(1)
        has_data = pdf_occ > 0
        weight = occ / pdf_occ.clamp_min(tiny)[:, None]
        ok = active & has_data[:, None] & (occ > min_gauss_occupancy) & (weight > min_gauss_weight)
        keep = ok.clone()
        fallback = (has_data & ~ok.any(1)).nonzero()[:, 0]
        keep[fallback, occ.masked_fill(~active, -1.0).argmax(1)[fallback]] = True
        keep = torch.where(has_data[:, None], keep, active)

        floor = (var_floor_factor * stats.global_mean_var()[1].to(self.device)).clamp_min(MIN_VARIANCE)
        safe_occ = occ.clamp_min(tiny)[..., None]
        new_mean = stats.first.to(self.device) / safe_occ
        new_var = stats.second.to(self.device) / safe_occ - new_mean**2
        floored = ok[..., None] & (new_var < floor)
        means = torch.where(ok[..., None], new_mean, self.means.double())
        vars = torch.where(ok[..., None], torch.maximum(new_var, floor), self.vars.double())
        kept_occ = occ * keep
        log_w = (kept_occ / kept_occ.sum(1, keepdim=True).clamp_min(tiny)).log()
        log_w = log_w.masked_fill(~keep, -math.inf)
        log_w = torch.where(has_data[:, None], log_w, self.log_weights.double())

        # compact: kept components first, in their old order; trim M
        arange = torch.arange(max_gauss, device=self.device)
        order = torch.argsort((~keep).long() * max_gauss + arange, dim=1)
        self.num_gauss_per_pdf = keep.sum(1)
        new_m = max(1, int(self.num_gauss_per_pdf.max()))
        order = order[:, :new_m]
        unused = arange[:new_m] >= self.num_gauss_per_pdf[:, None]
        order_d = order[..., None].expand(-1, -1, self.dim)
        self.means = torch.gather(means, 1, order_d).float().masked_fill(unused[..., None], 0.0)
        self.vars = torch.gather(vars, 1, order_d).float().masked_fill(unused[..., None], 1.0)
        self.log_weights = torch.gather(log_w, 1, order).float().masked_fill(unused, -math.inf)
        self.pdf_occupancy = pdf_occ

        num_frames = float(pdf_occ.sum())
        info = UpdateInfo(
            num_frames=num_frames,
            avg_log_like=float(stats.log_like) / max(num_frames, tiny),
            num_pdfs_no_data=int((~has_data).sum()),
            num_gauss_removed=int(active.sum() - keep.sum()),
            num_vars_floored=int(floored.sum()),
            total_gauss=self.total_gauss,
        )
        if info.num_pdfs_no_data:
            logger.warning(
                "%d of %d pdfs had no frames and keep their parameters", info.num_pdfs_no_data, num_pdfs
            )
        logger.debug("GMM update: %s", info)
        return info

    def mix_up(
        self,
        target_total_gauss: int,
        pdf_occupancy: torch.Tensor | None = None,
        power: float = MIX_UP_POWER,
        min_count: float = MIX_UP_MIN_COUNT,
        perturb_factor: float = PERTURB_FACTOR,
        seed: int = 0,
    ) -> int:
        """Kaldi's mix-up (AmDiagGmm::SplitByCount), in place; returns the new total of Gaussians.

        Targets per pdf from :func:`split_targets` (occupancy^power rule; ``pdf_occupancy`` (P,)
        defaults to the last :meth:`update`'s). A pdf under its target splits its heaviest component
        until it has the target: weights halved, means ``mu +- perturb_factor * std * r`` with ``r`` ~
        N(0, I) (a random direction as in Kaldi, so symmetric data still splits; drawn on the CPU from
        ``seed + total_gauss``: reproducible), variances copied. Pdfs above their target are left as
        they are (no merging). All pdfs split at once, one round per extra component.
        """
        if pdf_occupancy is None:
            pdf_occupancy = self.pdf_occupancy
        if pdf_occupancy is None:
            raise ValueError("mix_up needs `pdf_occupancy` (P,) or a preceding update()")
        targets = split_targets(pdf_occupancy, target_total_gauss, power, min_count)
        targets = torch.maximum(torch.tensor(targets, device=self.device), self.num_gauss_per_pdf)
        grow = int(targets.max()) - self.max_gauss
        if grow > 0:
            pad = (self.num_pdfs, grow)
            self.means = torch.cat([self.means, self.means.new_zeros(*pad, self.dim)], 1)
            self.vars = torch.cat([self.vars, self.vars.new_ones(*pad, self.dim)], 1)
            self.log_weights = torch.cat([self.log_weights, self.log_weights.new_full(pad, -math.inf)], 1)
        generator = torch.Generator().manual_seed(seed + self.total_gauss)
        while True:
            pdfs = (self.num_gauss_per_pdf < targets).nonzero()[:, 0]
            if pdfs.numel() == 0:
                return self.total_gauss
            heavy, new = self.log_weights[pdfs].argmax(1), self.num_gauss_per_pdf[pdfs]
            direction = torch.randn(pdfs.numel(), self.dim, generator=generator).to(self.device)
            shift = perturb_factor * self.vars[pdfs, heavy].sqrt() * direction
            mean, log_w = self.means[pdfs, heavy], self.log_weights[pdfs, heavy] - math.log(2.0)
            self.means[pdfs, new], self.means[pdfs, heavy] = mean - shift, mean + shift
            self.vars[pdfs, new] = self.vars[pdfs, heavy]
            self.log_weights[pdfs, new], self.log_weights[pdfs, heavy] = log_w, log_w
            self.num_gauss_per_pdf[pdfs] += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Plain tensors, for ``torch.save``."""
        names = ("means", "vars", "log_weights", "num_gauss_per_pdf", "center")
        return {name: getattr(self, name) for name in names}

    @classmethod
    def from_state_dict(
        cls, state: dict[str, torch.Tensor], device: torch.device | str | None = None
    ) -> DiagGmm:
        """Inverse of :meth:`state_dict` (e.g. of ``torch.load(path, weights_only=True)``)."""
        gmm = cls(
            state["means"], state["vars"], state["log_weights"], state["num_gauss_per_pdf"], state["center"]
        )
        return gmm.to(device) if device is not None else gmm

    def subset(self, pdfs: torch.Tensor) -> DiagGmm:
        """The GMMs of ``pdfs`` only (pdf ``pdfs[k]`` becomes pdf k), trimmed to their largest mixture:
        forced alignment evaluates the few pdfs of one utterance's graph, not all of them."""
        pdfs = torch.as_tensor(pdfs, dtype=torch.long, device=self.device)
        num_gauss = self.num_gauss_per_pdf[pdfs]
        m = max(1, int(num_gauss.max())) if len(pdfs) else 1
        return DiagGmm(self.means[pdfs, :m], self.vars[pdfs, :m], self.log_weights[pdfs, :m], num_gauss,
                       self.center)

    def to(self, device: torch.device | str) -> DiagGmm:
        """Move every tensor to ``device`` (in place, like ``nn.Module.to``); returns self."""
        for name in ("means", "vars", "log_weights", "num_gauss_per_pdf", "center", "pdf_occupancy"):
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name).to(device))
        return self


def _tf32_matmul(device: torch.device) -> bool:
    """Whether float32 matmuls on ``device`` run in reduced precision (TF32 loses ~1e-1 here)."""
    if device.type != "cuda":
        return False
    try:
        return torch.backends.cuda.matmul.fp32_precision not in ("none", "ieee")
    except (AttributeError, RuntimeError):
        return True


def split_targets(
    pdf_occupancy: torch.Tensor,
    target_total: int,
    power: float = MIX_UP_POWER,
    min_count: float = MIX_UP_MIN_COUNT,
) -> list[int]:
    """Gaussians per pdf for a total of ``target_total`` (Kaldi's GetSplitTargets).

    Every pdf starts with 1; one more goes, repeatedly, to the pdf with the largest occ^power / count
    (ties: lowest pdf id), except that a pdf never gets (count + 1) * min_count >= occ. The total may
    stay below target when min_count or missing data stop the splitting (warned about).
    """
    occs = [float(o) for o in pdf_occupancy.tolist()]
    counts = [1] * len(occs)
    heap = [(-(occ**power), pdf) for pdf, occ in enumerate(occs) if occ > 0]
    heapq.heapify(heap)
    total = len(occs)
    while total < target_total and heap:
        _, pdf = heapq.heappop(heap)
        if (counts[pdf] + 1) * min_count >= occs[pdf]:
            continue  # min_count reached: this pdf is not split any more
        counts[pdf] += 1
        total += 1
        heapq.heappush(heap, (-(occs[pdf] ** power) / counts[pdf], pdf))
    if total < target_total:
        logger.warning(
            "mix-up reaches %d of %d Gaussians (min_count=%g or pdfs without data)",
            total, target_total, min_count,
        )
    return counts


def num_gauss_schedule(
    num_iters: int, initial_total: int, target_total: int, max_iter_inc: int | None = None
) -> list[int]:
    """Mix-up target of each of ``num_iters`` updates, as train_mono.sh (totgauss=1000): updates 0
    (flat start) and 1 keep ``initial_total`` (= number of pdfs), then a linear increase per iteration
    reaching ``target_total`` at update ``max_iter_inc + 1`` (default 3/4 of the iterations: Kaldi's
    30 of 40) and staying there. Kaldi's integer increment may stop short of the target; this does not.
    """
    if max_iter_inc is None:
        max_iter_inc = max(1, (3 * num_iters) // 4)
    inc = (target_total - initial_total) / max_iter_inc
    return [initial_total + round(inc * min(max(it - 1, 0), max_iter_inc)) for it in range(num_iters)]


def realign_iters(num_iters: int) -> list[int]:
    """Iterations that realign before accumulating (train_mono.sh's list; iteration 0 uses the equal
    alignment of the flat start)."""
    return [it for it in KALDI_MONO_REALIGN_ITERS if it < num_iters]
