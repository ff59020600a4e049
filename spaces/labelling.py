"""Extraction labels: greedy monotone alignment of summary clauses to source clauses (SPACES).

Algorithm (kexue 8046 / bojone/SPACES `extract_convert.extract_matching`): given source clauses T[a:b]
and summary clauses S[c:d], take the longest summary clause S_i (by string length, first on ties),
match it to the source clause T_j with the highest character-level score 0.2·R1 + 0.4·R2 + 0.4·RL of
T_j (hypothesis) against S_i (reference), first on ties, then recurse on (T[a:j+1], S[c:i]) and
(T[j:b], S[i+1:d]). T_j belongs to both halves, so one source clause may absorb several summary
clauses and the alignment is monotone. The labels are the matched source indices, sorted and unique.
The score is `spaces.metrics`' SPACES scorer by default (`backend="spaces"`, rouge 1.0.0 as SPACES
ran it), or `backend="rouge-score"`.

Difference from the original, on purpose: a summary clause sharing no character with any candidate
is left unmatched (the original's argmax over all-zero scores labels the first candidate, a wrong
label); both halves then keep the whole source range.

Speed: candidates are scored exactly in decreasing order of `PreparedText.bound` (no LCS needed for
the bound) until the bound falls below the best exact score; why: `benchmarks/bench_spaces.py`.
"""

from __future__ import annotations

from collections.abc import Sequence

from spaces.data import check_clauses
from spaces.metrics import PreparedText, prepare, weighted_rouge

__all__ = ["extract_matching", "extract_pairs", "oracle_text", "oracle_score", "clause_labels"]


def _best_match(summ: PreparedText, src: Sequence[PreparedText], lo: int, hi: int) -> int | None:
    """Index in [lo, hi) of the best-scoring source clause for `summ`; None if no overlap at all."""
    cands = []
    for j in range(lo, hi):
        t = src[j]
        if t.distinct.isdisjoint(summ.distinct):
            continue  # scores exactly 0
        cands.append((-t.bound(summ), j))
    if not cands:
        return None
    cands.sort()
    best, best_j = -1.0, None
    for neg_bound, j in cands:
        if -neg_bound < best:
            break
        score = src[j].weighted(summ)
        if score > best or (score == best and best_j is not None and j < best_j):
            best, best_j = score, j
    return best_j


def extract_pairs(source_clauses: Sequence[str], summary_clauses: Sequence[str],
                  backend: str = "spaces") -> list[tuple[int, int]]:
    """(summary index, source index) pairs of the greedy monotone alignment, sorted by summary index."""
    check_clauses(source_clauses, "source_clauses")
    check_clauses(summary_clauses, "summary_clauses")
    src = [prepare(c, "char", backend) for c in source_clauses]
    summ = [prepare(c, "char", backend) for c in summary_clauses]
    lengths = [len(c) for c in summary_clauses]
    pairs = []
    stack = [(0, len(summ), 0, len(src))]  # summary range [c, d), source range [a, b)
    while stack:
        c, d, a, b = stack.pop()
        if c >= d or a >= b:
            continue
        i = max(range(c, d), key=lambda k: (lengths[k], -k))  # longest, first on ties
        j = _best_match(summ[i], src, a, b)
        if j is None:
            stack.append((c, i, a, b))
            stack.append((i + 1, d, a, b))
            continue
        pairs.append((i, j))
        stack.append((c, i, a, j + 1))
        stack.append((i + 1, d, j, b))
    return sorted(pairs)


def extract_matching(source_clauses: Sequence[str], summary_clauses: Sequence[str],
                     backend: str = "spaces") -> list[int]:
    """Sorted, unique indices of the source clauses matched by the greedy monotone alignment."""
    return sorted({j for _, j in extract_pairs(source_clauses, summary_clauses, backend)})


def clause_labels(source_clauses: Sequence[str], summary_clauses: Sequence[str], backend: str = "spaces") -> list[int]:
    """0/1 label per source clause (1 = extracted)."""
    chosen = set(extract_matching(source_clauses, summary_clauses, backend))
    return [int(j in chosen) for j in range(len(source_clauses))]


def oracle_text(source_clauses: Sequence[str], indices: Sequence[int]) -> str:
    """The extracted clauses, in source order, concatenated."""
    for j in indices:
        if not 0 <= j < len(source_clauses):
            raise ValueError(f"index {j} out of range for {len(source_clauses)} source clauses")
    return "".join(source_clauses[j] for j in sorted(set(indices)))


def oracle_score(source_clauses: Sequence[str], summary: str, summary_clauses: Sequence[str] | None = None,
                 unit: str = "char", backend: str = "spaces", user_dict: str | None = None) -> float:
    """Weighted ROUGE of the labelled clauses (the extraction oracle) against the summary; `backend`
    scores both the labelling and the result, `user_dict` is jieba's for unit "word"."""
    from spaces.data import split_clauses

    summary_clauses = split_clauses(summary, None) if summary_clauses is None else summary_clauses
    chosen = extract_matching(source_clauses, summary_clauses, backend)
    return weighted_rouge(oracle_text(source_clauses, chosen), summary, unit, backend, user_dict)
