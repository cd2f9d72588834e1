"""A template grammar for synthetic read speech: word classes, sentence templates, seeded sampling.

The file format (``data_prep/synth_rm_grammar.txt`` is one), line by line; ``#`` starts a comment:

- ``NAME: entry entry ...`` defines the word class ``NAME`` (upper case letters, digits, ``_``); indented
  lines continue the last class. An entry ``a_b`` is the two-word phrase ``a b``. Repeated entries of a
  class count once.
- ``> word $NAME [optional words] word`` is a sentence template: literal words, slots ``$NAME`` filled
  with one entry of the class, and bracketed groups (no nesting) kept or dropped with probability 1/2.

Sampling draws a template uniformly, then each slot's entry uniformly and each optional group by a coin,
all from the caller's ``numpy`` generator, so a sentence sequence is a function of the seed. Words are
returned upper case, as the corpora's transcripts are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_CLASS = re.compile(r"^([A-Z][A-Z0-9_]*):(.*)$")
_WORD = re.compile(r"^[a-z]+$")


class GrammarError(ValueError):
    pass


@dataclass(frozen=True)
class Token:
    """One template item: a literal word, a slot (``klass``) or an optional group (``group``)."""

    word: str | None = None
    klass: str | None = None
    group: tuple[Token, ...] | None = None


@dataclass(frozen=True)
class Grammar:
    classes: dict[str, tuple[tuple[str, ...], ...]]  # class -> entries, each a tuple of words
    templates: tuple[tuple[Token, ...], ...]

    def sample(self, rng: np.random.Generator) -> tuple[str, ...]:
        """One sentence, upper-case words."""
        template = self.templates[int(rng.integers(len(self.templates)))]
        return tuple(w.upper() for w in self._expand(template, rng))

    def _expand(self, tokens, rng) -> list[str]:
        words: list[str] = []
        for t in tokens:
            if t.word is not None:
                words.append(t.word)
            elif t.klass is not None:
                entries = self.classes[t.klass]
                words.extend(entries[int(rng.integers(len(entries)))])
            elif rng.random() < 0.5:
                words.extend(self._expand(t.group, rng))
        return words

    def vocabulary(self) -> set[str]:
        """Every word a sentence can contain (upper case)."""
        words = {w for entries in self.classes.values() for e in entries for w in e}
        stack = [t for template in self.templates for t in template]
        while stack:
            t = stack.pop()
            if t.word is not None:
                words.add(t.word)
            elif t.group is not None:
                stack.extend(t.group)
        return {w.upper() for w in words}


def parse_grammar(text: str, source: str = "<grammar>") -> Grammar:
    """Parse the grammar format of the module docstring; errors name ``source`` and the line."""
    classes: dict[str, list[tuple[str, ...]]] = {}
    templates: list[tuple[Token, ...]] = []
    current: str | None = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        where = f"{source}:{lineno}"
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if line.startswith(">"):
            templates.append(_parse_template(line[1:].split(), where))
            current = None
        elif line[0].isspace():
            if current is None:
                raise GrammarError(f"{where}: indented line continues no class: {raw.strip()!r}")
            classes[current].extend(_entries(line.split(), where))
        else:
            m = _CLASS.match(line)
            if not m:
                raise GrammarError(
                    f"{where}: expected 'NAME: entries', '> template' or an indented "
                    f"continuation, got {raw.strip()!r}"
                )
            current = m.group(1)
            if current in classes:
                raise GrammarError(f"{where}: class {current} is defined twice")
            classes[current] = _entries(m.group(2).split(), where)
    if not templates:
        raise GrammarError(f"{source}: no template ('> ...' line)")
    dedup = {name: tuple(dict.fromkeys(entries)) for name, entries in classes.items()}
    for name, entries in dedup.items():
        if not entries:
            raise GrammarError(f"{source}: class {name} has no entries")
    used = set()
    stack = [t for template in templates for t in template]
    while stack:
        t = stack.pop()
        if t.klass is not None:
            used.add(t.klass)
        elif t.group is not None:
            stack.extend(t.group)
    undefined = sorted(used - set(dedup))
    if undefined:
        raise GrammarError(f"{source}: templates use undefined classes {undefined}")
    return Grammar(classes=dedup, templates=tuple(templates))


def read_grammar(path: Path | str) -> Grammar:
    path = Path(path)
    if not path.is_file():
        raise GrammarError(f"grammar file {path} does not exist")
    return parse_grammar(path.read_text(encoding="utf-8"), str(path))


def _entries(fields: list[str], where: str) -> list[tuple[str, ...]]:
    entries = []
    for field in fields:
        words = tuple(field.split("_"))
        if not all(_WORD.match(w) for w in words):
            raise GrammarError(f"{where}: entry {field!r} is not lower-case words joined by '_'")
        entries.append(words)
    return entries


def _parse_template(fields: list[str], where: str) -> tuple[Token, ...]:
    tokens: list[Token] = []
    group: list[Token] | None = None
    for field in fields:
        opens, closes = field.startswith("["), field.endswith("]")
        item = field.strip("[]")
        if opens:
            if group is not None:
                raise GrammarError(f"{where}: nested '[' in template")
            group = []
        target = group if group is not None else tokens
        if item.startswith("$"):
            target.append(Token(klass=item[1:]))
        elif _WORD.match(item):
            target.append(Token(word=item))
        else:
            raise GrammarError(f"{where}: template item {field!r} is neither a word nor a $SLOT")
        if closes:
            if group is None:
                raise GrammarError(f"{where}: ']' without '['")
            tokens.append(Token(group=tuple(group)))
            group = None
    if group is not None:
        raise GrammarError(f"{where}: '[' is never closed")
    if not tokens:
        raise GrammarError(f"{where}: empty template")
    return tuple(tokens)
