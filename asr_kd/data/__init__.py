"""Data handling: text, lexicons, lang directories, features."""
