"""The ``lang`` stage: a Kaldi-style lang directory (phones, words, HMM topology, pdf ids, lexicon FSTs).

Usage:
    from asr_kd.data.lang import Lang, prepare_lang
    lang = prepare_lang("data/local/lexicon.txt", "data/lang")   # no-op when already done
    lang = Lang.load("data/lang")                                  # later stages

Files in ``lang_dir`` (symbols never contain whitespace; ids are contiguous from 0):
    lexicon.txt            ``WORD PHONE ...``: the input lexicon + ``<SIL> SIL`` + ``<UNK> SPN``, sorted by
                           word (a word's pronunciations keep their input order)
    lexicon_disambig.txt   the same lines with ``#1``, ``#2``, ... appended as Kaldi's add_lex_disambig.pl
    phones.txt             ``SYMBOL ID``: ``<eps> 0``, silence phones, sorted non-silence phones, ``#0..#N``
    words.txt              ``SYMBOL ID``: ``<eps> 0``, sorted lexicon words, ``#0``, ``<s>``, ``</s>``
    silence_phones.txt     one phone a line (``SIL``, ``SPN``); nonsilence_phones.txt likewise; disambig.txt:
                           ``#0 .. #N``, where ``#N`` (one past the lexicon's largest) is the optional-silence
                           disambiguation symbol of ``L_disambig.fst`` (Kaldi's ``--sil-disambig``)
    topo.json              ``{"entries": [{"phones": [...], "self_loop_probs": [p0, p1, ...]}]}``:
                           a left-to-right HMM per phone; emitting state i loops with p_i and moves on with
                           1 - p_i (the last state: leaves the phone); each state of each phone is its own pdf
    pdfs.txt               ``PDF_ID PHONE STATE`` for pdf ids 0 .. num_pdfs-1, ordered by phone id then state
    L.fst, L_disambig.fst  OpenFst (kaldifst) lexicon transducers, phones -> words, optional silence
                           between words (Kaldi's make_lexicon_fst.py, natural-log costs); L_disambig has the
                           disambiguation symbols and ``#0:#0`` self-loops; both arc-sorted on output labels
    lang.json              written last, so the directory is complete exactly when it exists: the resolved
                           config, counts, the sha256 of the input lexicon and ``files``: size and sha256
                           of every other file above (:func:`asr_kd.guard.record_files`)

:func:`prepare_lang` holds :func:`asr_kd.guard.stage_lock` on ``lang_dir`` and rebuilds a directory whose
files no longer match ``lang.json`` (missing, truncated or edited), so no marker outside the directory is
needed to know that it is finished.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from asr_kd.data.lexicon import Lexicon, LexiconError, read_lexicon, write_lexicon
from asr_kd.guard import record_files, remove_stale_temporaries, stage_lock, verify_files
from asr_kd.utils import atomic_output, file_sha256, write_json, write_text

FORMAT_VERSION = 1
EPS = "<eps>"
RESERVED_WORDS = (EPS, "#0", "<s>", "</s>")
RUN_HINT = "run `asr-kd lang` to (re)build it"
#: the files of a lang directory besides lang.json (each recorded in lang.json's ``files``)
LANG_FILES = (
    "lexicon.txt", "lexicon_disambig.txt", "phones.txt", "words.txt", "silence_phones.txt",
    "nonsilence_phones.txt", "disambig.txt", "topo.json", "pdfs.txt", "L.fst", "L_disambig.fst",
)  # fmt: skip


class LangError(ValueError):
    """A lang directory is missing, incomplete or inconsistent."""


@dataclass(frozen=True)
class LangConfig:
    """How the lang directory is built (saved in lang.json; a different config means a rebuild)."""

    num_states: int = 3  #: emitting HMM states per non-silence phone
    num_sil_states: int = 3  #: emitting HMM states per silence phone (``sil_phone``, ``oov_phone``)
    sil_phone: str = "SIL"  #: the silence phone
    sil_word: str = "<SIL>"  #: word whose pronunciation is ``sil_phone``
    oov_word: str = "<UNK>"  #: word transcripts' out-of-vocabulary words are mapped to
    oov_phone: str = "SPN"  #: spoken-noise phone, the pronunciation of ``oov_word``; a silence phone
    self_loop_prob: float = 0.75  #: initial self-loop probability of every state (Kaldi's gen_topo.pl)
    sil_prob: float = 0.5  #: probability of optional silence between words in L.fst (make_lexicon_fst.py)

    def validate(self) -> None:
        """Raise :class:`LangError` naming the first bad field."""
        checks = [
            (self.num_states >= 1, f"num_states must be >= 1, got {self.num_states}"),
            (self.num_sil_states >= 1, f"num_sil_states must be >= 1, got {self.num_sil_states}"),
            (0.0 < self.self_loop_prob < 1.0, f"self_loop_prob must be in (0, 1), got {self.self_loop_prob}"),
            (0.0 <= self.sil_prob < 1.0, f"sil_prob must be in [0, 1), got {self.sil_prob}"),
            (self.sil_phone != self.oov_phone, f"sil_phone = oov_phone = {self.sil_phone!r}"),
            (self.sil_word != self.oov_word, f"sil_word = oov_word = {self.sil_word!r}"),
        ] + [(not _bad_phone(p), f"phone {p!r}: {_bad_phone(p)}") for p in (self.sil_phone, self.oov_phone)] \
          + [(not _bad_word(w), f"word {w!r}: {_bad_word(w)}") for w in (self.sil_word, self.oov_word)]
        for ok, message in checks:
            if not ok:
                raise LangError(message)


def _bad_phone(phone: str) -> str:
    """Why ``phone`` cannot be a phone ('' if it can)."""
    if phone.startswith("#"):
        return "phones may not start with '#' (reserved for disambiguation symbols)"
    if phone == EPS or not phone or any(c.isspace() for c in phone):
        return f"phones may not be {EPS!r}, empty or contain whitespace"
    return ""


def _bad_word(word: str) -> str:
    """Why ``word`` cannot be a word ('' if it can)."""
    if word in RESERVED_WORDS or not word or any(c.isspace() for c in word):
        return f"words may not be one of {' '.join(RESERVED_WORDS)}, empty or contain whitespace"
    return ""


def add_disambig_symbols(lexicon: Lexicon) -> tuple[Lexicon, int]:
    """Append ``#1, #2, ...`` to homophones and to pronunciations that are prefixes of others.

    Exactly Kaldi's ``utils/add_lex_disambig.pl`` over the lines in ``lexicon`` order (words sorted):
    the k-th line carrying a pronunciation that is shared or a proper prefix of another gets ``#k``.

    Returns:
        The lexicon with disambiguation symbols, and the largest k used (0 if none).
    """
    entries = [(word, pron) for word in sorted(lexicon) for pron in lexicon[word]]
    count = Counter(pron for _, pron in entries)
    prefixes = {pron[:i] for _, pron in entries for i in range(1, len(pron))}
    last_used: dict[tuple[str, ...], int] = {}
    disambig: Lexicon = {}
    for word, pron in entries:
        if count[pron] > 1 or pron in prefixes:
            last_used[pron] = last_used.get(pron, 0) + 1
            pron = pron + (f"#{last_used[pron]}",)
        disambig.setdefault(word, []).append(pron)
    return disambig, max(last_used.values(), default=0)


def _symbol_table_text(symbols: list[str]) -> str:
    return "".join(f"{s} {i}\n" for i, s in enumerate(symbols))


@dataclass
class Lang:
    """Everything in a lang directory, in memory; build with :func:`prepare_lang`, read with :meth:`load`."""

    config: LangConfig
    lexicon_sha256: str  #: sha256 of the input lexicon file
    phone_symbols: list[str]  #: phones.txt: index = phone id (incl. <eps> and #0..#N)
    word_symbols: list[str]  #: words.txt: index = word id (incl. <eps>, #0, <s>, </s>)
    silence_phones: list[str]
    nonsilence_phones: list[str]
    lexicon: Lexicon  #: lexicon.txt
    lexicon_disambig: Lexicon  #: lexicon_disambig.txt
    topology: dict[str, tuple[float, ...]]  #: phone -> self-loop probability of each emitting state
    phone_to_id: dict[str, int] = field(init=False, repr=False, compare=False)
    word_to_id: dict[str, int] = field(init=False, repr=False, compare=False)
    pdf_to_phone_id: np.ndarray = field(init=False, repr=False, compare=False)  #: (num_pdfs,) int64
    pdf_to_state: np.ndarray = field(init=False, repr=False, compare=False)  #: (num_pdfs,) int64
    _pdf_offset: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.phone_to_id = {s: i for i, s in enumerate(self.phone_symbols)}
        self.word_to_id = {s: i for i, s in enumerate(self.word_symbols)}
        self._pdf_offset, phone_ids, states = {}, [], []
        for phone in self.phones:
            self._pdf_offset[phone] = len(states)
            phone_ids += [self.phone_to_id[phone]] * self.num_states(phone)
            states += range(self.num_states(phone))
        self.pdf_to_phone_id = np.array(phone_ids, dtype=np.int64)
        self.pdf_to_state = np.array(states, dtype=np.int64)
        self.pdf_to_phone_id.setflags(write=False)
        self.pdf_to_state.setflags(write=False)

    @property
    def phones(self) -> list[str]:
        """The real phones in id order: silence phones, then non-silence phones."""
        return self.silence_phones + self.nonsilence_phones

    @property
    def words(self) -> list[str]:
        """The lexicon's words in id order (without <eps>, #0, <s>, </s>)."""
        return self.word_symbols[1:-3]

    @property
    def disambig_symbols(self) -> list[str]:
        """``#0 .. #N``; ``#0`` is the LM back-off symbol, ``#N`` the optional-silence one."""
        return [s for s in self.phone_symbols if s.startswith("#")]

    @property
    def disambig_ids(self) -> list[int]:
        return [self.phone_to_id[s] for s in self.disambig_symbols]

    @property
    def sil_disambig(self) -> str:
        """The disambiguation symbol after optional silence in L_disambig.fst."""
        return self.disambig_symbols[-1]

    @property
    def num_pdfs(self) -> int:
        return len(self.pdf_to_state)

    def num_states(self, phone: str) -> int:
        """Number of emitting HMM states (= pdfs) of ``phone``."""
        return len(self.topology[phone])

    def pdf_ids(self, phone: str) -> list[int]:
        """The pdf id of each emitting state of ``phone``, by state index."""
        return list(range(self._pdf_offset[phone], self._pdf_offset[phone] + self.num_states(phone)))

    def transition_logprobs(self, phone: str) -> list[tuple[float, float]]:
        """Per emitting state of ``phone``: (self-loop, forward) natural-log probabilities."""
        return [(math.log(p), math.log1p(-p)) for p in self.topology[phone]]

    # ---------------------------------------------------------------- building and writing

    @classmethod
    def build(cls, lexicon: Lexicon, config: LangConfig, lexicon_sha256: str) -> Lang:
        """The lang for a validated lexicon that already holds the silence and OOV words."""
        silence = [config.sil_phone, config.oov_phone]
        used = {p for prons in lexicon.values() for pron in prons for p in pron}
        nonsilence = sorted(used - set(silence))
        lexicon_disambig, max_disambig = add_disambig_symbols(lexicon)
        disambig = [f"#{i}" for i in range(max_disambig + 2)]  # + 1 for the optional-silence symbol
        topology = {p: (config.self_loop_prob,) * config.num_sil_states for p in silence}
        topology.update({p: (config.self_loop_prob,) * config.num_states for p in nonsilence})
        return cls(config=config, lexicon_sha256=lexicon_sha256,
                   phone_symbols=[EPS] + silence + nonsilence + disambig,
                   word_symbols=[EPS] + sorted(lexicon) + ["#0", "<s>", "</s>"],
                   silence_phones=silence, nonsilence_phones=nonsilence, lexicon=lexicon,
                   lexicon_disambig=lexicon_disambig, topology=topology)

    def pdfs_text(self) -> str:
        return "".join(f"{pdf} {self.phone_symbols[p]} {s}\n"
                       for pdf, (p, s) in enumerate(zip(self.pdf_to_phone_id, self.pdf_to_state)))

    def topo_json(self) -> dict:
        groups: dict[tuple[float, ...], list[str]] = {}
        for phone in self.phones:
            groups.setdefault(self.topology[phone], []).append(phone)
        return {"entries": [{"phones": ps, "self_loop_probs": list(t)} for t, ps in groups.items()]}

    def info(self, lexicon_path: Path | str) -> dict:
        """The contents of lang.json."""
        return {"format_version": FORMAT_VERSION, "config": asdict(self.config),
                "lexicon_path": str(lexicon_path), "lexicon_sha256": self.lexicon_sha256,
                "num_phones": len(self.phones), "num_silence_phones": len(self.silence_phones),
                "num_nonsilence_phones": len(self.nonsilence_phones),
                "num_disambig": len(self.disambig_symbols), "num_words": len(self.words),
                "num_pdfs": self.num_pdfs}

    def write(self, lang_dir: Path | str, lexicon_path: Path | str) -> None:
        """Write every file, each atomically, ``lang.json`` last."""
        lang_dir = Path(lang_dir)
        write_lexicon(lang_dir / "lexicon.txt", self.lexicon)
        write_lexicon(lang_dir / "lexicon_disambig.txt", self.lexicon_disambig)
        write_text(lang_dir / "phones.txt", _symbol_table_text(self.phone_symbols))
        write_text(lang_dir / "words.txt", _symbol_table_text(self.word_symbols))
        for name, symbols in [("silence_phones.txt", self.silence_phones),
                              ("nonsilence_phones.txt", self.nonsilence_phones),
                              ("disambig.txt", self.disambig_symbols)]:
            write_text(lang_dir / name, "".join(f"{s}\n" for s in symbols))
        write_json(lang_dir / "topo.json", self.topo_json())
        write_text(lang_dir / "pdfs.txt", self.pdfs_text())
        from asr_kd.data.lexicon_fst import make_lexicon_fst

        for name, use_disambig in [("L.fst", False), ("L_disambig.fst", True)]:
            fst = make_lexicon_fst(self, disambig=use_disambig)
            with atomic_output(lang_dir / name) as tmp:
                if not fst.write(str(tmp)):
                    raise OSError(f"could not write {lang_dir / name}")
        files = record_files([lang_dir / name for name in LANG_FILES], root=lang_dir)
        write_json(lang_dir / "lang.json", {**self.info(lexicon_path), "files": files})

    # ---------------------------------------------------------------- reading

    @classmethod
    def load(cls, lang_dir: Path | str) -> Lang:
        """Read and cross-check a lang directory written by :func:`prepare_lang`."""
        lang_dir = Path(lang_dir)
        info_path = lang_dir / "lang.json"
        if not info_path.is_file():
            raise LangError(f"{info_path} does not exist: {lang_dir} is missing or incomplete; {RUN_HINT}")
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
            if info.get("format_version") != FORMAT_VERSION:
                raise LangError(f"format_version {info.get('format_version')!r}, expected {FORMAT_VERSION}")
            config = LangConfig(**info["config"])
            config.validate()
            counts = {key: info[key] for key in ("num_phones", "num_words", "num_pdfs")}
            lexicon_sha256 = info["lexicon_sha256"]
        except (ValueError, KeyError, TypeError) as e:
            raise LangError(f"{info_path}: unreadable or not from this version ({e}); {RUN_HINT}") from e
        phone_symbols = _read_symbol_table(lang_dir / "phones.txt")
        silence, nonsilence = (_read(lang_dir / f"{k}_phones.txt").split() for k in ("silence", "nonsilence"))
        disambig = [f"#{i}" for i in range(len(phone_symbols) - 1 - len(silence) - len(nonsilence))]
        _check(phone_symbols == [EPS] + silence + nonsilence + disambig and len(disambig) >= 2,
               lang_dir / "phones.txt", "expected <eps>, silence_phones.txt, nonsilence_phones.txt, #0 .. #N")
        _check(_read(lang_dir / "disambig.txt").split() == disambig, lang_dir / "disambig.txt",
               "does not list the '#' symbols of phones.txt")
        topology = _read_topology(lang_dir / "topo.json", silence + nonsilence)
        lexicon, lexicon_disambig = (read_lexicon(_exists(lang_dir / f))
                                     for f in ("lexicon.txt", "lexicon_disambig.txt"))
        lang = cls(config, lexicon_sha256, phone_symbols, _read_symbol_table(lang_dir / "words.txt"),
                   silence, nonsilence, lexicon, lexicon_disambig, topology)
        _check(lang.word_symbols == [EPS] + sorted(lexicon) + ["#0", "<s>", "</s>"], lang_dir / "words.txt",
               "expected <eps>, the words of lexicon.txt sorted, #0, <s>, </s>")
        unknown = {p for prons in lexicon.values() for pron in prons for p in pron} - set(lang.phones)
        _check(not unknown, lang_dir / "lexicon.txt", f"uses phones not in phones.txt: {sorted(unknown)}")
        _check(add_disambig_symbols(lexicon)[0] == lexicon_disambig, lang_dir / "lexicon_disambig.txt",
               "does not match lexicon.txt")
        _check_pdfs(lang, lang_dir / "pdfs.txt")
        for key, value in counts.items():
            _check(value == lang.info("")[key], info_path, f"{key} {value} does not match the other files")
        return lang


def _exists(path: Path) -> Path:
    if not path.is_file():
        raise LangError(f"{path} does not exist; {RUN_HINT}")
    return path


def _read(path: Path) -> str:
    return _exists(path).read_text(encoding="utf-8")


def _read_topology(path: Path, phones: list[str]) -> dict[str, tuple[float, ...]]:
    """topo.json as phone -> per-state self-loop probabilities; it must cover exactly ``phones``."""
    try:
        topology = {p: tuple(float(x) for x in e["self_loop_probs"])
                    for e in json.loads(_read(path))["entries"] for p in e["phones"]}
    except (ValueError, KeyError, TypeError) as e:
        raise LangError(f"{path}: expected {{'entries': [{{'phones': [...], 'self_loop_probs': [...]}}]}} "
                        f"({e}); {RUN_HINT}") from e
    _check(sorted(topology) == sorted(phones), path, f"has phones {sorted(topology)}, not {sorted(phones)}")
    _check(all(t and all(0 < p < 1 for p in t) for t in topology.values()), path,
           "every phone needs >= 1 state, each with a self-loop probability in (0, 1)")
    return topology


def _check(ok: bool, path: Path, message: str) -> None:
    if not ok:
        raise LangError(f"{path}: {message}; {RUN_HINT}")


def _read_symbol_table(path: Path) -> list[str]:
    """An OpenFst text symbol table with ids 0, 1, 2, ... in order."""
    symbols = []
    for lineno, line in enumerate(_read(path).splitlines(), start=1):
        fields = line.split()
        if len(fields) != 2 or fields[1] != str(len(symbols)):
            raise LangError(f"{path}:{lineno}: expected 'SYMBOL {len(symbols)}', got {line!r}")
        symbols.append(fields[0])
    _check(bool(symbols) and symbols[0] == EPS, path, f"the first symbol must be '{EPS} 0'")
    return symbols


def _check_pdfs(lang: Lang, path: Path) -> None:
    """pdfs.txt must list exactly the pdfs implied by phones.txt + topo.json."""
    lines = _read(path).splitlines()
    for lineno, line in enumerate(lines, start=1):
        fields = line.split()
        if len(fields) != 3 or not fields[0].isdigit() or not fields[2].isdigit():
            raise LangError(f"{path}:{lineno}: expected 'PDF_ID PHONE STATE', got {line!r}")
        pdf = lineno - 1
        if pdf >= lang.num_pdfs or (int(fields[0]), fields[1], int(fields[2])) != (
                pdf, lang.phone_symbols[lang.pdf_to_phone_id[pdf]], lang.pdf_to_state[pdf]):
            raise LangError(f"{path}:{lineno}: got {line!r}, expected pdf ids 0, 1, ... ordered by phone "
                            f"id then state, as phones.txt and topo.json imply; {RUN_HINT}")
    _check(len(lines) == lang.num_pdfs, path, f"has {len(lines)} pdfs, topo.json implies {lang.num_pdfs}")


# -------------------------------------------------------------------- the stage


def _validate_lexicon_file(path: Path, config: LangConfig) -> None:
    """Reject reserved or malformed symbols and conflicting silence/OOV entries, naming the line."""
    expected = {config.sil_word: (config.sil_phone,), config.oov_word: (config.oov_phone,)}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            word, pron = fields[0], tuple(fields[1:])
            why = _bad_word(word) or next((f"{p!r}: {_bad_phone(p)}" for p in pron if _bad_phone(p)), "")
            if word in expected and pron != expected[word]:
                why = f"{word} is reserved for the pronunciation {' '.join(expected[word])}"
            if why:
                raise LexiconError(f"{path}:{lineno}: {why}, got {line.strip()!r}")


def prepare_lang(
    lexicon_path: Path | str,
    lang_dir: Path | str,
    num_states: int = 3,
    num_sil_states: int = 3,
    sil_phone: str = "SIL",
    sil_word: str = "<SIL>",
    oov_word: str = "<UNK>",
    oov_phone: str = "SPN",
    self_loop_prob: float = 0.75,
    sil_prob: float = 0.5,
    force: bool = False,
) -> Lang:
    """Build ``lang_dir`` from a lexicon (see the module docstring for the files); return the :class:`Lang`.

    A no-op (logs "already done") when ``lang_dir/lang.json`` exists and records the same config and
    the same lexicon sha256; otherwise (or with ``force``) rebuilds: ``lang.json`` is removed first and
    written last, so an interrupted build is never taken for a finished one.
    See :class:`LangConfig` for the parameters.
    """
    lexicon_path, lang_dir = Path(lexicon_path), Path(lang_dir)
    config = LangConfig(num_states, num_sil_states, sil_phone, sil_word, oov_word, oov_phone,
                        self_loop_prob, sil_prob)
    config.validate()
    lexicon = read_lexicon(lexicon_path)
    sha256 = file_sha256(lexicon_path)
    with stage_lock(lang_dir, "lang"):
        # only this stage's own temporaries: a decode may be writing a graph into the directory
        remove_stale_temporaries(lang_dir, [f".tmp.*.{name}" for name in (*LANG_FILES, "lang.json")])
        if not force:
            lang = _finished_lang(lang_dir, config, sha256)
            if lang is not None:
                logging.info(f"{lang_dir} already done (lexicon {lexicon_path}, {lang.num_pdfs} pdfs)")
                return lang
        return _build_lang(lexicon_path, lang_dir, lexicon, config, sha256)


def _finished_lang(lang_dir: Path, config: LangConfig, sha256: str) -> Lang | None:
    """The lang of ``lang_dir`` if it was finished from this lexicon and config and its files are as
    recorded in lang.json; else None, logging why it is rebuilt."""
    info_path = lang_dir / "lang.json"
    if not info_path.is_file():
        return None
    try:
        lang = Lang.load(lang_dir)
        files = json.loads(info_path.read_text(encoding="utf-8")).get("files")
    except ValueError as e:  # LangError, LexiconError, JSONDecodeError
        logging.warning(f"{lang_dir} is inconsistent ({e}): rebuilding")
        return None
    if lang.config != config or lang.lexicon_sha256 != sha256:
        logging.info(f"{lang_dir} was built from another lexicon or config: rebuilding")
        return None
    problems = verify_files(files, root=lang_dir) if isinstance(files, dict) else ["no file record in lang.json"]
    if problems:
        logging.warning(f"{lang_dir} is damaged ({'; '.join(problems)}): rebuilding")
        return None
    return lang


def _build_lang(lexicon_path: Path, lang_dir: Path, lexicon: Lexicon, config: LangConfig, sha256: str) -> Lang:
    info_path = lang_dir / "lang.json"
    _validate_lexicon_file(lexicon_path, config)
    lexicon.setdefault(config.sil_word, [(config.sil_phone,)])
    lexicon.setdefault(config.oov_word, [(config.oov_phone,)])
    lang = Lang.build(lexicon, config, sha256)
    info_path.unlink(missing_ok=True)
    lang.write(lang_dir, lexicon_path)
    logging.info(f"wrote {lang_dir}: {len(lang.phones)} phones, {len(lang.words)} words, "
                 f"{lang.num_pdfs} pdfs, {len(lang.disambig_symbols)} disambiguation symbols")
    return lang
