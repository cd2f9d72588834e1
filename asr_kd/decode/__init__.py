"""Decoding: the HCLG graph (kaldifst + kaldilm), hybrid search with kaldi-decoder, and WER scoring.

Usage:
    from asr_kd.decode.graph import build_decoding_graph
    from asr_kd.decode.decoder import compute_log_priors, hybrid_loglikes, decode_batch
    from asr_kd.decode.scoring import write_results
"""
