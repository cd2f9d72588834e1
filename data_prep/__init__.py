"""Lhotse-shaped data recipes: ``download_X`` / ``prepare_X`` per corpus.

Every ``prepare_X`` writes ``<corpus>_recordings_<split>.jsonl.gz``,
``<corpus>_supervisions_<split>.jsonl.gz`` and ``<corpus>_lexicon.txt`` into its output directory
and returns ``{split: {"recordings": RecordingSet, "supervisions": SupervisionSet}}``.
"""
