"""Tests of the chunked forward (asr_kd.models.streaming): chunk by chunk equals the whole-utterance
forward for the DNN and the TDNN; running CMVN is the causal prefix computation; latency by hand."""

from __future__ import annotations

import pytest
import torch

from asr_kd.models import ModelConfig, build_model
from asr_kd.models.streaming import ChunkedModel, algorithmic_latency_ms, receptive_field, streaming_info

CONFIGS = {
    "dnn": ModelConfig("dnn", "student-small", 13, feature_dim=20, dropout=0.0,
                       overrides={"hidden_dim": 32, "num_layers": 3, "left_context": 4, "right_context": 2}),
    "tdnn": ModelConfig("tdnn", "student-small", 13, feature_dim=20, dropout=0.0,
                        overrides={"hidden_dim": 24, "kernel_sizes": [5, 3, 3], "dilations": [1, 1, 3]}),
}  # fmt: skip


def model_of(arch: str) -> torch.nn.Module:
    torch.manual_seed(3)
    model = build_model(CONFIGS[arch])
    for name, buffer in model.named_buffers():  # batch-norm statistics away from (0, 1)
        if name.endswith("running_mean"):
            buffer.normal_(0.0, 0.5)
        elif name.endswith("running_var"):
            buffer.uniform_(0.5, 2.0)
    return model.eval()


def fbank(lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(sum(lengths))
    x = 3.0 * torch.randn(len(lengths), max(lengths), 20, generator=gen) + 6.0
    for b, n in enumerate(lengths):
        x[b, n:] = 100.0  # garbage padding: must not matter
    return x, torch.tensor(lengths)


def test_receptive_fields_by_hand() -> None:
    assert receptive_field(CONFIGS["dnn"]) == (4, 2)
    assert receptive_field(CONFIGS["tdnn"]) == (2 + 1 + 3, 2 + 1 + 3)
    assert receptive_field(ModelConfig("tdnn", "student", 87)) == (13, 13)  # Kaldi splices: 2+1+1+3+3+3
    with pytest.raises(ValueError, match="blstm/student sees the whole utterance"):
        receptive_field(ModelConfig("blstm", "student", 87))


@pytest.mark.parametrize("arch", ["dnn", "tdnn"])
@pytest.mark.parametrize("chunk", [1, 5, 16, 200])
def test_chunked_equals_whole_utterance(arch, chunk) -> None:
    model = model_of(arch)
    x, n = fbank([61, 23, 4, 17])
    with torch.no_grad():
        whole = model(x, n)
    chunked = ChunkedModel(model, chunk, cmvn="utterance")(x, n)
    assert (chunked.shape, chunked.dtype) == (whole.shape, whole.dtype)
    for b, t in enumerate(n.tolist()):
        assert torch.allclose(chunked[b, :t], whole[b, :t], atol=1e-5, rtol=1e-5), (arch, chunk, b)
        assert float(whole[b, :t].abs().max()) > 0.1  # not trivially equal


@pytest.mark.parametrize("arch", ["dnn", "tdnn"])
def test_running_cmvn_is_the_forward_of_what_has_arrived(arch) -> None:
    """Chunk [s, e) with running CMVN = the whole-utterance forward of the prefix x[:e + R] at frames s..e."""
    model, chunk = model_of(arch), 6
    _, right = receptive_field(CONFIGS[arch])
    x, n = fbank([40])
    chunked = ChunkedModel(model, chunk, cmvn="running")(x, n)
    with torch.no_grad():
        for start in range(0, 40, chunk):
            end = min(40, start + chunk)
            hi = min(40, end + right)
            prefix = model(x[:, :hi], torch.tensor([hi]))
            assert torch.allclose(chunked[0, start:end], prefix[0, start:end], atol=1e-4, rtol=1e-4), start
        # early chunks differ from the whole-utterance statistics; a chunk as long as the utterance does not
        assert not torch.allclose(chunked[0, :chunk], model(x, n)[0, :chunk], atol=1e-3)
        assert torch.allclose(ChunkedModel(model, 40, cmvn="running")(x, n), model(x, n), atol=1e-4)


def test_latency_and_refusals() -> None:
    assert algorithmic_latency_ms(16, 13) == pytest.approx(290.0)
    info = streaming_info([CONFIGS["dnn"], CONFIGS["tdnn"]], 10, "utterance")
    assert info == {"chunk_frames": 10, "cmvn": "utterance", "left_context": 6, "right_context": 6,
                    "latency_ms": pytest.approx(160.0)}  # fmt: skip
    with pytest.raises(TypeError, match="not a BLSTM"):
        ChunkedModel(build_model(ModelConfig("blstm", "student-small", 5, dropout=0.0)), 8)
    with pytest.raises(ValueError, match="chunk_frames must be >= 1"):
        ChunkedModel(model_of("dnn"), 0)
    with pytest.raises(ValueError, match="cmvn must be one of"):
        ChunkedModel(model_of("dnn"), 4, cmvn="global")
