"""Chunked (streaming) forward passes of the finite-context models: the DNN and the TDNN.

An output frame ``t`` of a :class:`~asr_kd.models.dnn.ContextDNN` depends on the normalised input frames
``t - L .. t + R`` (its context window); of a :class:`~asr_kd.models.tdnn.TDNN` on ``t - L .. t + R`` with
``L = R = sum_l d_l (k_l - 1) / 2`` over its layers. :func:`receptive_field` gives ``(L, R)``. The chunked
forward splits each utterance into chunks of ``chunk_frames`` output frames; chunk ``[s, e)`` is computed
from the input frames ``[max(0, s - L), min(T, e + R))`` alone (the context it carries: ``L`` frames of
history, ``R`` of look-ahead) and only its ``e - s`` central outputs are kept. Clipping the window at the
utterance's ends gives the network the same zero padding there as the whole-utterance forward, so with
the same normalised input every output is the whole-utterance one, up to float rounding.

CMVN (the models' per-utterance mean and variance normalisation, :class:`~asr_kd.models.layers.UtteranceNorm`)
is applied before chunking:

* ``cmvn="utterance"``: the statistics of the whole utterance, as the model was trained: the same
  posteriors as the whole-utterance forward (what the tests check); it needs the whole utterance before
  the first chunk, so it measures the chunked network, not a live stream;
* ``cmvn="running"``: the chunk's window is normalised with the statistics of every frame received so far
  (frames ``[0, min(T, e + R))``), with the same variance floor: causal, as a live stream would run it.

**Algorithmic latency** of chunked decoding: the first frame of a chunk waits for the chunk's other
``chunk_frames - 1`` frames and the ``R`` look-ahead frames, so
``latency_ms = (chunk_frames + R) * frame_shift_ms`` (the fbank window and compute time excluded).

Usage::

    chunked = ChunkedModel(model, chunk_frames=16, cmvn="utterance")
    logits = chunked(features, lengths)        # (B, T, P), like model(features, lengths)
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from asr_kd.models.config import ModelConfig
from asr_kd.models.factory import resolve_hparams
from asr_kd.models.layers import UtteranceNorm

CMVN_MODES = ("utterance", "running")
STREAMING_ARCHS = ("dnn", "tdnn")


def receptive_field(config: ModelConfig) -> tuple[int, int]:
    """``(left, right)`` context frames of a DNN or TDNN output frame; ValueError for other families."""
    if config.arch not in STREAMING_ARCHS:
        raise ValueError(f"chunked forward needs a finite-context model ({' or '.join(STREAMING_ARCHS)}); "
                         f"{config.name} sees the whole utterance")  # fmt: skip
    hparams = resolve_hparams(config)
    if config.arch == "dnn":
        return hparams.left_context, hparams.right_context
    side = sum(d * (k - 1) // 2 for k, d in zip(hparams.kernel_sizes, hparams.dilations, strict=True))
    return side, side


def algorithmic_latency_ms(chunk_frames: int, right_context: int, frame_shift: float = 0.01) -> float:
    """``(chunk_frames + right_context) * frame_shift`` in milliseconds (module docstring)."""
    return 1000.0 * (chunk_frames + right_context) * frame_shift


def streaming_info(configs: Sequence[ModelConfig], chunk_frames: int, cmvn: str,
                   frame_shift: float = 0.01) -> dict[str, Any]:  # fmt: skip
    """What a chunked decoding records: chunk size, CMVN mode, the largest context of the models and the
    algorithmic latency it implies."""
    fields = [receptive_field(c) for c in configs]
    right = max(r for _, r in fields)
    return {"chunk_frames": chunk_frames, "cmvn": cmvn, "left_context": max(left for left, _ in fields),
            "right_context": right, "latency_ms": algorithmic_latency_ms(chunk_frames, right, frame_shift)}  # fmt: skip


class _ZeroPadding(nn.Module):
    """Stands in for the model's CMVN when the input is already normalised: zeroes the padding only."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return x * mask.unsqueeze(-1).to(x.dtype)


def _without_cmvn(model: nn.Module) -> nn.Module:
    """A shallow copy of ``model`` (same weights) whose ``input_norm`` only zeroes padding."""
    network = copy.copy(model)
    network._modules = dict(model._modules)  # a new table: the original keeps its CMVN
    network.input_norm = _ZeroPadding()
    return network


class ChunkedModel:
    """A DNN or TDNN whose forward pass runs chunk by chunk (module docstring); called like the model."""

    def __init__(self, model: nn.Module, chunk_frames: int, cmvn: str = "utterance") -> None:
        """Args:
        model: a :class:`~asr_kd.models.dnn.ContextDNN` or :class:`~asr_kd.models.tdnn.TDNN` (torch, eval).
        chunk_frames: output frames per chunk, >= 1.
        cmvn: ``"utterance"`` or ``"running"`` (module docstring).
        """
        from asr_kd.models.dnn import ContextDNN
        from asr_kd.models.tdnn import TDNN

        if not isinstance(model, (ContextDNN, TDNN)):
            kind = type(model).__name__
            raise TypeError(f"chunked forward runs DNN and TDNN checkpoints, not a {kind} (ONNX files normalise "
                             "their whole input, so pass the checkpoint)")  # fmt: skip
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        if cmvn not in CMVN_MODES:
            raise ValueError(f"cmvn must be one of {CMVN_MODES}, got {cmvn!r}")
        self.model, self.chunk_frames, self.cmvn = model, chunk_frames, cmvn
        if isinstance(model, ContextDNN):
            self.left, self.right = model.left_context, model.right_context
        else:
            self.left = self.right = sum(c.dilation[0] * (c.kernel_size[0] - 1) // 2 for c in model.convs)
        self.network = _without_cmvn(model)
        norm: UtteranceNorm = model.input_norm
        self.var_floor = norm.var_floor

    def parameters(self):
        """The wrapped model's parameters (for parameter counts)."""
        return self.model.parameters()

    def _normalise(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """``(n, F)`` utterance frames normalised per utterance (for "utterance"; rows as UtteranceNorm)."""
        return self.model.input_norm(x[None, :n], torch.ones(1, n, dtype=torch.bool, device=x.device))[0]

    def _windows(self, x: torch.Tensor, n: int) -> list[tuple[torch.Tensor, int, int, int]]:
        """``(normalised window (W, F), first output frame, outputs kept, offset of the first kept row)`` per
        chunk of one utterance ``x[:n]``."""
        xf = x[:n].to(torch.float32)
        whole = self._normalise(xf, n) if self.cmvn == "utterance" else None
        if whole is None:  # running statistics: prefix sums over the frames received so far
            zero = xf.new_zeros(1, xf.shape[1])
            sums = torch.cat([zero, xf.cumsum(0)])
            squares = torch.cat([zero, (xf.double() ** 2).cumsum(0)])
        out = []
        for start in range(0, n, self.chunk_frames):
            end = min(n, start + self.chunk_frames)
            lo, hi = max(0, start - self.left), min(n, end + self.right)
            if whole is not None:
                window = whole[lo:hi]
            else:
                count = float(hi)
                mean = sums[hi] / count
                var = (squares[hi] / count - mean.double() ** 2).clamp(min=self.var_floor).float()
                window = (xf[lo:hi] - mean) * torch.rsqrt(var)
            out.append((window, start, end - start, start - lo))
        return out

    @torch.no_grad()
    def __call__(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(B, T, F)`` features, ``(B,)`` lengths -> ``(B, T, P)`` logits; every chunk of every utterance is
        one row of a single padded batch through the network (each row sees only its own window)."""
        chunks = [(b, *w) for b, n in enumerate(lengths.tolist()) for w in self._windows(features[b], n)]
        windows = [w for _, w, *_ in chunks]
        sizes = torch.tensor([w.shape[0] for w in windows], device=features.device)
        padded = torch.nn.utils.rnn.pad_sequence(windows, batch_first=True)
        logits = self.network(padded, sizes)  # (num chunks, W, P)
        out = logits.new_zeros(features.shape[0], features.shape[1], logits.shape[-1])
        for i, (b, _, start, kept, offset) in enumerate(chunks):
            out[b, start : start + kept] = logits[i, offset : offset + kept]
        return out
