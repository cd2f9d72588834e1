"""Context-dependent HMM machinery: decision trees, transition models, training graphs, GMM systems.

- :mod:`asr_kd.hmm.tree`: ``ContextDependency`` (``pdf(window, hmm_state)``), ``tree.json``;
- :mod:`asr_kd.hmm.build_tree`: tree statistics, phone-clustering questions, greedy splitting;
- :mod:`asr_kd.hmm.transitions`: ``TransitionModel`` (re-estimated self-loop probabilities);
- :mod:`asr_kd.hmm.graph`: per-utterance training graphs ``H o C o L o G_utt`` (kaldifst compose_context);
- :mod:`asr_kd.hmm.lda`: splicing, LDA, MLLT;
- :mod:`asr_kd.hmm.system`: ``GmmSystem`` (``*.gmm.pt``): transform + GMM + tree + transitions + lang hash.
"""
