"""From cuts to model outputs: the toolkit's one frame-batch layout, forward pass and frame accuracy.

Training (:mod:`asr_kd.trainer.data`), the soft-target cache and ``asr-kd evaluate``
(:mod:`asr_kd.kd.cache.build`, :mod:`asr_kd.kd.evaluate`) and decoding (:mod:`asr_kd.decode.run`) all read
cuts, pad them and run models through this module, so that a new kind of model input or model is added
in one place.

Usage::

    from asr_kd.batch import FrameAccuracy, collate_frames, model_logits

    batch, skipped = collate_frames(cuts, labels="optional", skip_unreadable=True)  # skipped: {cut id: reason}
    logits = model_logits(models, batch, device)          # (K, B, T, P) float32, one slice per model
    accuracy = FrameAccuracy()
    accuracy.update(logits[0], batch["frame_labels"])
    accuracy.value                                         # share of labelled frames whose arg-max is right

A frame batch is a dict (what the lhotse-style datasets return)::

    features      (B, T, F) float32, zero-padded after each cut's length
    lengths       (B,) int64, frames per cut
    frame_labels  (B, T) int64 pdf ids, IGNORE_INDEX on padding and on cuts without labels (when asked for)
    cut_ids       B cut ids, in the row order of the tensors

Frame accuracy (docs/design.md): the share of labelled frames (label != IGNORE_INDEX) whose arg-max
model output equals the frame label.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

IGNORE_INDEX = -100  # frame label of padding and unlabelled frames (torch cross_entropy's default ignore_index)
LABEL_MODES = ("required", "optional", "none")

#: ``model(features (B, T, F), lengths (B,)) -> logits (B, T, P)``: a torch module or anything that
#: behaves like one (e.g. an ONNX runtime session wrapped to take and return tensors)
AcousticModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class UnreadableCutError(ValueError):
    """A cut whose features or frame labels cannot be used; the message names the cut and the reason."""


class NonFiniteFeaturesError(UnreadableCutError):
    """A cut whose stored features hold NaN or infinite values (a bad utterance: skipped and counted)."""


def load_cut_features(cut) -> torch.Tensor:
    """The cut's stored features as a ``(T, F)`` float32 tensor.

    Raises NonFiniteFeaturesError naming the cut when a value is NaN or infinite: checked here, where
    features are read, so that no model output, loss or soft target is ever computed from them.
    """
    features = torch.from_numpy(np.asarray(cut.load_features(), dtype=np.float32))
    bad = ~torch.isfinite(features)
    if bad.any():
        frame = int(bad.any(dim=-1).nonzero()[0]) if features.dim() > 1 else int(bad.nonzero()[0])
        raise NonFiniteFeaturesError(f"cut {cut.id}: {int(bad.sum())} of {features.numel()} feature values are not "
                                     f"finite (NaN or inf), the first in frame {frame}")  # fmt: skip
    return features


def load_cut_labels(cut, num_frames: int) -> torch.Tensor:
    """The cut's ``frame_labels`` custom field as a ``(T,)`` int64 tensor, ``T == num_frames``.

    Raises UnreadableCutError when the cut has no labels or they do not have one label per feature frame.
    """
    if not cut.has_custom("frame_labels"):
        raise UnreadableCutError(f"cut {cut.id} has no 'frame_labels' field: use the align stage's cuts")
    labels = torch.from_numpy(np.asarray(cut.load_frame_labels()).astype(np.int64))
    if labels.shape != (num_frames,):
        raise UnreadableCutError(f"cut {cut.id}: frame_labels has shape {tuple(labels.shape)}, expected "
                                 f"({num_frames},) like its features")  # fmt: skip
    return labels


def load_cut(cut, labels: str = "required") -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(features (T, F) float32, frame labels (T,) int64 or None)`` of one cut.

    ``labels``: ``"required"`` (a cut without labels is an error), ``"optional"`` (None when it has none),
    ``"none"`` (never loaded). Raises UnreadableCutError for unusable labels; storage errors propagate.
    """
    if labels not in LABEL_MODES:
        raise ValueError(f"labels must be one of {LABEL_MODES}, got {labels!r}")
    features = load_cut_features(cut)
    if labels == "none" or (labels == "optional" and not cut.has_custom("frame_labels")):
        return features, None
    return features, load_cut_labels(cut, features.shape[0])


def pad_frames(features: Sequence[torch.Tensor], labels: Sequence[torch.Tensor | None] | None,
               cut_ids: Sequence[str]) -> dict[str, Any]:  # fmt: skip
    """The frame batch of per-cut ``(T_i, F)`` features and ``(T_i,)`` labels (None: an unlabelled cut).

    ``labels=None`` leaves ``frame_labels`` out of the batch.
    """
    lengths = torch.tensor([f.shape[0] for f in features], dtype=torch.int64)
    batch: dict[str, Any] = {
        "features": torch.nn.utils.rnn.pad_sequence(list(features), batch_first=True),
        "lengths": lengths,
        "cut_ids": list(cut_ids),
    }
    if labels is not None:
        rows = [y if y is not None else torch.full((int(n),), IGNORE_INDEX, dtype=torch.int64)
                for y, n in zip(labels, lengths, strict=True)]  # fmt: skip
        batch["frame_labels"] = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=IGNORE_INDEX)
    return batch


def collate_frames(cuts: Iterable, labels: str = "required", skip_unreadable: bool = False,
                   skip_nonfinite: bool = False) -> tuple[dict[str, Any] | None, dict[str, str]]:  # fmt: skip
    """Load and pad a batch of cuts (module docstring).

    Args:
        cuts: the batch's cuts, in row order.
        labels: as in :func:`load_cut`; with ``"none"`` the batch has no ``frame_labels``.
        skip_unreadable: leave out a cut whose features or labels cannot be loaded (any storage error, a
            truncated array, labels of the wrong length, non-finite features) and report it, instead of
            raising.
        skip_nonfinite: leave out (and report) a cut whose features are not finite
            (``NonFiniteFeaturesError``); other errors still raise unless ``skip_unreadable``.

    Returns:
        ``(batch, skipped)``: the batch (None when every cut was skipped) and ``{cut id: reason}``.
    """
    feats, ys, ids, skipped = [], [], [], {}
    for cut in cuts:
        try:
            f, y = load_cut(cut, labels)
        except Exception as e:  # noqa: BLE001 - any storage error of one cut: reported, never fatal
            if not (skip_unreadable or (skip_nonfinite and isinstance(e, NonFiniteFeaturesError))):
                raise
            skipped[cut.id] = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
            continue
        feats.append(f)
        ys.append(y)
        ids.append(cut.id)
    if not feats:
        return None, skipped
    return pad_frames(feats, None if labels == "none" else ys, ids), skipped


def forward_logits(model: AcousticModel, features: torch.Tensor, lengths: torch.Tensor,
                   bf16: bool = False) -> torch.Tensor:  # fmt: skip
    """``model(features, lengths)`` as float32 logits ``(B, T, P)``; bf16 autocast only on CUDA.

    Raises ValueError when the model does not keep one output row per input frame.
    """
    device = features.device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda"):
        logits = model(features, lengths)
    if logits.shape[:2] != features.shape[:2]:
        raise ValueError(f"model output {tuple(logits.shape)} does not match the features {tuple(features.shape)}: "
                         "frame-level models must keep one output per input frame")  # fmt: skip
    return logits.float()


@torch.no_grad()
def model_logits(models: Sequence[AcousticModel], batch: dict[str, Any], device: torch.device) -> torch.Tensor:
    """Logits of every model on a frame batch: ``(K, B, T, P)`` float32 on ``device``."""
    if not models:
        raise ValueError("no models given")
    x = batch["features"].to(device, non_blocking=True)
    lengths = batch["lengths"].to(device, non_blocking=True)
    return torch.stack([forward_logits(m, x, lengths) for m in models])


def count_correct(scores: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(correct, labelled)`` frame counts as tensors on ``scores``' device (no host sync).

    ``scores``: ``(B, T, P)`` logits, log-posteriors or posteriors; ``labels``: ``(B, T)``, IGNORE_INDEX on
    frames that do not count.
    """
    labels = labels.to(scores.device)
    mask = labels != IGNORE_INDEX
    return ((scores.argmax(-1) == labels) & mask).sum(), mask.sum()


class FrameAccuracy:
    """Running frame accuracy over batches (module docstring)."""

    def __init__(self) -> None:
        self.correct = 0
        self.frames = 0

    def update(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        correct, frames = count_correct(scores, labels)
        self.correct += int(correct)
        self.frames += int(frames)

    @property
    def value(self) -> float | None:
        """The accuracy as a fraction, or None when no labelled frame was seen."""
        return self.correct / self.frames if self.frames else None
