"""ROUGE for Chinese summaries: the SPACES scorer (default) and the rouge-score one, and the CAIL2020 score.

CAIL2020 score (SPACES, kexue 8046): S = 0.2·R1 + 0.4·R2 + 0.4·RL with F-scores, on words for the
evaluation and on characters for the labelling. Two scorers (`backend`):

"spaces" (default) is what bojone/SPACES ran: `snippets.compute_rouge` = the `rouge` package (pltrdy)
release 1.0.0 of March 2020 on `" ".join(tokens)`, words from jieba with `HMM=False` and a user
dictionary. That package, as called there:
  * splits the joined text at every "." into sentences (dropping empty pieces; a piece of only spaces
    becomes the one-word sentence ""), collapses whitespace, and flattens the sentences into words;
  * ROUGE-N (N = 1, 2) counts n-grams as multisets over the flattened words (across sentences):
    o = Σ_g min(c_hyp(g), c_ref(g)), P = o / #hyp n-grams, R = o / #ref n-grams (0 if a count is 0);
  * ROUGE-L (summary level, Lin 2004 §3.2, always with sets there): for every (reference sentence,
    hypothesis sentence) pair one LCS is traced back through the dynamic-programming table (diagonal
    on a match, else up when L(i−1, j) > L(i, j−1), else left) and the union U of the *words* on
    those LCSs is kept; P = |U| / #distinct hyp words, R = |U| / #distinct ref words;
  * F = 2·P·R / (P + R + 1e-8); an empty hypothesis or reference (no sentence left) scores 0.
"rouge-score" is Google's `rouge-score` with our tokenizer (characters, or jieba words with its
defaults): multiset n-grams, RL from the LCS length, F = 2PR / (P + R), no sentence split.

`PreparedText` holds one text's counts for either scorer so the labelling's greedy search can score
a clause against many others cheaply and prune with `bound` (an upper bound on the weighted score).
LCS lengths and tracebacks use bit-parallel rows (Crochemore et al. 2001), O(len(b)) big-int
operations per pair; why: `benchmarks/bench_spaces.py` (labelling).
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from collections.abc import Sequence

__all__ = ["WEIGHTS", "BACKENDS", "UNITS", "describe", "segment", "tokenize", "PreparedText", "prepare", "rouge_scores",
           "weighted_rouge", "corpus_rouge", "lcs_length", "lcs_rows"]

WEIGHTS = (0.2, 0.4, 0.4)
BACKENDS = ("spaces", "rouge-score")
UNITS = ("char", "word")


def describe(backend: str, user_dict: str | os.PathLike | None = None) -> str:
    """One line naming the scorer, for reports: which backend, and the jieba settings of its words."""
    _check("char", backend)
    if backend == "spaces":
        words = "jieba words with HMM=False" + (f" and the user dictionary {os.fspath(user_dict)}" if user_dict
                                                else " and no user dictionary")
        return f"the SPACES scorer (the rouge 1.0.0 package as bojone/SPACES ran it; {words})"
    return "rouge-score (jieba words with jieba's defaults)"


def _check(unit: str, backend: str) -> None:
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


# ------------------------------------------------------------------------------------ segmentation
@functools.lru_cache(maxsize=4)
def _jieba(user_dict: str | None, stamp: tuple | None):
    import jieba

    jieba.setLogLevel(60)
    tokenizer = jieba.Tokenizer()
    if user_dict is not None:
        tokenizer.load_userdict(user_dict)
    tokenizer.initialize()
    return tokenizer


def _user_dict_key(user_dict: str | os.PathLike | None) -> tuple[str | None, tuple | None]:
    if user_dict is None or os.fspath(user_dict) == "":
        return None, None
    path = os.path.abspath(os.fspath(user_dict))
    if not os.path.isfile(path):
        raise ValueError(f"jieba user dictionary {os.fspath(user_dict)!r} does not exist")
    st = os.stat(path)
    return path, (st.st_mtime_ns, st.st_size)  # a rewritten file is loaded again


def segment(text: str, user_dict: str | os.PathLike | None = None) -> list[str]:
    """jieba words as SPACES' snippets.py cuts them: `HMM=False`, the user dictionary at `user_dict`
    loaded (lines "word [freq] [tag]"); whitespace comes back as tokens, as jieba returns it.

    Each dictionary gets its own `jieba.Tokenizer` (cached), so the global jieba state is untouched.
    """
    return _jieba(*_user_dict_key(user_dict)).lcut(text, HMM=False)


def tokenize(text: str, unit: str = "char") -> list[str]:
    """The rouge-score backend's tokens: characters or jieba words (jieba's defaults), whitespace dropped."""
    _check(unit, "rouge-score")
    if unit == "char":
        return [c for c in text if not c.isspace()]
    import jieba

    jieba.setLogLevel(60)
    return [w for w in jieba.lcut(text) if w.strip()]


# ------------------------------------------------------------------------------------------- LCS
def lcs_rows(a: Sequence, b: Sequence) -> list[int]:
    """Bit-parallel LCS rows: rows[j] has bit i set iff L(i+1, j) = L(i, j), L(i, j) = LCS(a[:i], b[:j]).

    V starts all ones over len(a) bits; for each b_j with match mask M (bit i set iff a_i = b_j):
    U = V & M, V = (V + U) | (V − U). Then L(i, j) = i − popcount(rows[j] & (2^i − 1)).
    """
    masks: dict = {}
    for i, x in enumerate(a):
        masks[x] = masks.get(x, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    rows = [v]
    for y in b:
        u = v & masks.get(y, 0)
        v = ((v + u) | (v - u)) & full
        rows.append(v)
    return rows


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence of a and b."""
    if not a or not b:
        return 0
    return len(a) - lcs_rows(a, b)[-1].bit_count()


def _lcs_words(ref: Sequence[str], hyp: Sequence[str]) -> set[str]:
    """The words on the LCS that rouge 1.0.0's `_recon_lcs(ref, hyp)` traces back (see the docstring)."""
    rows = lcs_rows(ref, hyp)
    out = set()
    i, j = len(ref), len(hyp)
    while i > 0 and j > 0:
        if ref[i - 1] == hyp[j - 1]:
            out.add(ref[i - 1])
            i, j = i - 1, j - 1
        elif (i - 1) - (rows[j] & ((1 << (i - 1)) - 1)).bit_count() > i - (rows[j - 1] & ((1 << i) - 1)).bit_count():
            i -= 1
        else:
            j -= 1
    return out


# ----------------------------------------------------------------------------------- prepared text
def _f_spaces(n_hyp: int, n_ref: int, overlap: int) -> float:
    p = 0.0 if n_hyp == 0 else overlap / n_hyp
    r = 0.0 if n_ref == 0 else overlap / n_ref
    return 2.0 * ((p * r) / (p + r + 1e-8))


def _f_plain(n_hyp: int, n_ref: int, overlap: int) -> float:
    return 0.0 if overlap == 0 else 2.0 * overlap / (n_hyp + n_ref)  # = 2PR / (P + R)


def _overlap(a: Counter, b: Counter) -> int:
    if len(a) > len(b):
        a, b = b, a
    get = b.get
    total = 0
    for g, n in a.items():
        m = get(g)
        if m:
            total += n if n < m else m
    return total


class PreparedText:
    """One text's tokens and n-gram counts for a scorer; `scores(ref)` and `bound(ref)` against another.

    Build with `prepare`. Fields: `sentences` (lists of words; one sentence for "rouge-score"), `words`
    (flattened), `c1` / `c2` (unigram / bigram Counters), `n1` / `n2` (their totals), `distinct`.
    """

    __slots__ = ("backend", "c1", "c2", "distinct", "n1", "n2", "sentences", "words")

    def __init__(self, sentences: list[list[str]], backend: str):
        self.backend = backend
        self.sentences = sentences
        self.words = [w for s in sentences for w in s]
        bigrams = list(zip(self.words, self.words[1:]))
        self.c1, self.c2 = Counter(self.words), Counter(bigrams)
        self.n1, self.n2 = len(self.words), len(bigrams)
        self.distinct = frozenset(self.c1)

    def _n_scores(self, ref: PreparedText) -> tuple[float, float]:
        f = _f_spaces if self.backend == "spaces" else _f_plain
        return (f(self.n1, ref.n1, _overlap(self.c1, ref.c1)),
                f(self.n2, ref.n2, _overlap(self.c2, ref.c2) if self.n2 and ref.n2 else 0))

    def scores(self, ref: PreparedText) -> tuple[float, float, float]:
        """(R1, R2, RL) F-scores of this text as the hypothesis against `ref` (0, 0, 0 if either is empty)."""
        if ref.backend != self.backend:
            raise ValueError(f"cannot score a {self.backend!r} text against a {ref.backend!r} one")
        if not self.sentences or not ref.sentences:
            return 0.0, 0.0, 0.0
        f1, f2 = self._n_scores(ref)
        if self.backend == "spaces":
            union: set = set()
            for r in ref.sentences:
                for h in self.sentences:
                    union |= _lcs_words(r, h)
            return f1, f2, _f_spaces(len(self.distinct), len(ref.distinct), len(union))
        return f1, f2, _f_plain(self.n1, ref.n1, lcs_length(self.words, ref.words))

    def weighted(self, ref: PreparedText) -> float:
        """0.2·R1 + 0.4·R2 + 0.4·RL, summed in SPACES' order."""
        r1, r2, rl = self.scores(ref)
        return r1 * WEIGHTS[0] + r2 * WEIGHTS[1] + rl * WEIGHTS[2]

    def bound(self, ref: PreparedText) -> float:
        """An upper bound on `weighted(ref)` without any LCS: RL is replaced by its value at the
        largest overlap it can have (the shared distinct words for "spaces", the unigram overlap
        for "rouge-score", since an LCS never uses more)."""
        if not self.sentences or not ref.sentences:
            return 0.0
        f1, f2 = self._n_scores(ref)
        if self.backend == "spaces":
            fl = _f_spaces(len(self.distinct), len(ref.distinct), len(self.distinct & ref.distinct))
        else:
            fl = f1
        return f1 * WEIGHTS[0] + f2 * WEIGHTS[1] + fl * WEIGHTS[2]


def _spaces_sentences(tokens: Sequence[str]) -> list[list[str]]:
    joined = " ".join(tokens)  # snippets.compute_rouge
    sentences = [" ".join(s.split()) for s in joined.split(".") if len(s) > 0]  # rouge 1.0.0 Rouge._get_scores
    return [s.split(" ") for s in sentences]


def prepare(text: str, unit: str = "char", backend: str = "spaces",
            user_dict: str | os.PathLike | None = None) -> PreparedText:
    """`text` tokenised and counted the way `backend` scores it (see the module docstring).

    unit "char": every character (SPACES joins the string's characters with spaces); "word": jieba
    words (`segment` with `user_dict` for "spaces", jieba's defaults for "rouge-score").
    """
    _check(unit, backend)
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    if backend == "spaces":
        return PreparedText(_spaces_sentences(list(text) if unit == "char" else segment(text, user_dict)), backend)
    words = tokenize(text, unit)
    return PreparedText([words] if words else [], backend)


# ------------------------------------------------------------------------------------ text scores
def rouge_scores(hypothesis: str, reference: str, unit: str = "char", backend: str = "spaces",
                 user_dict: str | os.PathLike | None = None) -> dict[str, float]:
    """{"rouge-1", "rouge-2", "rouge-l"} F-scores of `hypothesis` against `reference`.

    backend "spaces": ours, equal to SPACES' `compute_rouge` (rouge 1.0.0); "rouge-score": the
    rouge-score package itself with our tokenizer. An empty side scores 0 with either.
    """
    _check(unit, backend)
    if backend == "spaces":
        s = prepare(hypothesis, unit, backend, user_dict).scores(prepare(reference, unit, backend, user_dict))
        return dict(zip(("rouge-1", "rouge-2", "rouge-l"), s))
    s = _scorer(unit).score(reference, hypothesis)  # rouge-score takes (target, prediction)
    return {"rouge-1": s["rouge1"].fmeasure, "rouge-2": s["rouge2"].fmeasure, "rouge-l": s["rougeL"].fmeasure}


def weighted_rouge(hypothesis: str, reference: str, unit: str = "char", backend: str = "spaces",
                   user_dict: str | os.PathLike | None = None) -> float:
    """0.2·R1 + 0.4·R2 + 0.4·RL (F-scores), the CAIL2020 summarisation score in [0, 1]."""
    s = rouge_scores(hypothesis, reference, unit, backend, user_dict)
    return s["rouge-1"] * WEIGHTS[0] + s["rouge-2"] * WEIGHTS[1] + s["rouge-l"] * WEIGHTS[2]


def corpus_rouge(hypotheses: Sequence[str], references: Sequence[str], unit: str = "word",
                 backend: str = "spaces", user_dict: str | os.PathLike | None = None) -> dict[str, float]:
    """Means over documents of R1, R2, RL and the weighted score (as the CAIL2020 evaluation)."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses vs {len(references)} references")
    if not hypotheses:
        raise ValueError("corpus_rouge needs at least one document")
    totals: Counter[str] = Counter()
    for h, r in zip(hypotheses, references):
        s = rouge_scores(h, r, unit, backend, user_dict)
        s["weighted"] = s["rouge-1"] * WEIGHTS[0] + s["rouge-2"] * WEIGHTS[1] + s["rouge-l"] * WEIGHTS[2]
        totals.update(s)
    return {k: v / len(hypotheses) for k, v in totals.items()}


class _Tokenizer:
    """The object rouge-score calls: `.tokenize(text) -> list[str]`."""

    def __init__(self, unit: str):
        self.unit = unit

    def tokenize(self, text: str) -> list[str]:
        return tokenize(text, self.unit)


@functools.lru_cache(maxsize=2)
def _scorer(unit: str):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=_Tokenizer(unit))
