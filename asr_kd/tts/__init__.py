"""In-process speech synthesis (espeak-ng through ctypes) for the synthetic corpora and G2P."""
