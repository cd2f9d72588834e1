"""GMM features of the aligner: MFCC-like cepstra + deltas computed from the stored log-mel fbank.

Kaldi's monophone recipe trains on ``MFCC -> apply-cmvn -> add-deltas``. We do not store MFCCs; we
derive them from the 80-dim log-mel ``Fbank`` (lhotse, natural-log energies) that every cut carries:

1. DCT-II, orthonormal (Kaldi's ``ComputeDctMatrix``; ``torchaudio.functional.create_dct(norm="ortho")``)
   keeping ``num_ceps`` = 13 cepstra, c0 included (Kaldi would put log-energy in c0; we keep c0).
2. Cepstral liftering ``c_i *= 1 + L/2 sin(pi i / L)``, ``L = 22`` (Kaldi's ``--cepstral-lifter``;
   0 disables). c0 is unchanged.
3. Per-utterance cepstral mean normalization (Kaldi ``apply-cmvn`` with per-utterance stats, means only);
   padding frames are excluded from the mean.
4. Deltas and delta-deltas with window 2 (``torchaudio.functional.compute_deltas(win_length=5)``, edge
   frames replicated). Deltas equal Kaldi's ``add-deltas`` exactly; delta-deltas equal it everywhere but
   the first and last 2 frames (we replicate the edge *deltas*, Kaldi the edge cepstra).

Usage::

    from asr_kd.align.feats import gmm_features
    feats = gmm_features(cut.load_features())            # (T, 80) -> (T, 39)
    feats = gmm_features(fbank_batch, lengths)           # (B, T, 80), (B,) -> (B, T, 39), padding zeroed
"""

from __future__ import annotations

import functools
import math

import torch
from torchaudio.functional import compute_deltas, create_dct

NUM_CEPS = 13  # cepstra kept, c0 included
CEPSTRAL_LIFTER = 22.0  # Kaldi's default --cepstral-lifter
DELTA_WINDOW = 2  # Kaldi's add-deltas --delta-window: frames on each side


@functools.lru_cache(maxsize=8)
def _dct_matrix(num_mels: int, num_ceps: int, cepstral_lifter: float) -> torch.Tensor:
    """(num_mels, num_ceps) float64 orthonormal DCT-II, liftering folded into the columns."""
    dct = create_dct(num_ceps, num_mels, norm="ortho").double()
    if cepstral_lifter > 0:
        i = torch.arange(num_ceps, dtype=torch.float64)
        dct = dct * (1.0 + 0.5 * cepstral_lifter * torch.sin(math.pi * i / cepstral_lifter))
    return dct


def _replicate_last_valid(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Overwrite padding frames with each utterance's last valid frame. x: (B, T, F), lengths: (B,)."""
    t = torch.arange(x.shape[1], device=x.device)
    index = torch.minimum(t[None, :], (lengths - 1).clamp_min(0)[:, None])  # (B, T)
    return torch.gather(x, 1, index[:, :, None].expand(-1, -1, x.shape[2]))


def _deltas(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Deltas along time with edges replicated at each utterance's own end. x: (B, T, F) -> (B, T, F)."""
    x = _replicate_last_valid(x, lengths)
    return compute_deltas(x.transpose(1, 2), win_length=2 * DELTA_WINDOW + 1).transpose(1, 2)


def gmm_features(
    fbank: torch.Tensor,
    lengths: torch.Tensor | None = None,
    num_ceps: int = NUM_CEPS,
    cepstral_lifter: float = CEPSTRAL_LIFTER,
) -> torch.Tensor:
    """MFCC-like GMM features (cepstra, deltas, delta-deltas) from log-mel filterbank energies.

    Args:
        fbank: log-mel energies, (T, num_mels) for one utterance or (B, T, num_mels) padded batch.
        lengths: (B,) valid frames per utterance (batched input only; default: all T frames valid).
        num_ceps: cepstra kept (c0 included).
        cepstral_lifter: Kaldi's lifter coefficient L; 0 disables liftering.

    Returns:
        (T, 3 * num_ceps) or (B, T, 3 * num_ceps) in ``fbank``'s dtype and device: ``[c, delta c,
        delta-delta c]`` with per-utterance zero-mean cepstra; padding frames (t >= lengths[b]) are 0.
    """
    if fbank.dim() not in (2, 3):
        raise ValueError(f"`fbank` must be (T, F) or (B, T, F), got shape {tuple(fbank.shape)}")
    single = fbank.dim() == 2
    if single:
        if lengths is not None:
            raise ValueError("`lengths` is only for batched (B, T, F) input")
        fbank = fbank.unsqueeze(0)
    batch, num_frames, num_mels = fbank.shape
    if lengths is None:
        lengths = torch.full((batch,), num_frames, dtype=torch.long, device=fbank.device)
    lengths = lengths.to(device=fbank.device, dtype=torch.long)
    if lengths.shape != (batch,) or bool((lengths < 1).any()) or bool((lengths > num_frames).any()):
        raise ValueError(
            f"`lengths` must be {batch} values in [1, {num_frames}], got {lengths.tolist()}"
        )

    dct = _dct_matrix(num_mels, num_ceps, float(cepstral_lifter)).to(fbank.device, fbank.dtype)
    ceps = fbank @ dct  # (B, T, C)
    mask = (torch.arange(num_frames, device=fbank.device)[None, :] < lengths[:, None]).unsqueeze(-1)
    ceps = ceps.masked_fill(~mask, 0.0)
    ceps = ceps - ceps.sum(dim=1, keepdim=True) / lengths[:, None, None].to(ceps.dtype)  # CMN

    delta = _deltas(ceps, lengths)
    delta2 = _deltas(delta, lengths)
    feats = torch.cat([ceps, delta, delta2], dim=-1).masked_fill(~mask, 0.0)
    return feats[0] if single else feats
