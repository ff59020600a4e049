"""Character / word vocabularies for Chinese text, and the word-embedding initialisation of SPACES.

`Vocab` maps text to ids. Character level: every non-space character is a token (as a Chinese BERT's
vocab.txt does). Word level (SPACES): jieba words (cut as SPACES cuts them: `HMM=False`, with the
user dictionary at `user_dict`; `spaces.metrics.segment`) that made it into the vocabulary are single
tokens, anything else falls back to its characters. Specials are the BERT ones, [PAD]=0, [UNK]=1, [CLS]=2,
[SEP]=3, [MASK]=4, when the vocabulary is built here; a vocab.txt keeps its own ids.

Word embeddings (SPACES): a word added to a character vocabulary starts as the mean of its
characters' embeddings, E[w] = (1/|w|) Σ_{c∈w} E[c] (unknown characters count as [UNK]).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from spaces.metrics import segment

__all__ = ["Vocab", "SPECIALS", "init_word_embeddings"]

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


class Vocab:
    """Token list with lookup; `word_level` switches jieba segmentation (with `user_dict`) on for `encode`."""

    def __init__(self, tokens: Sequence[str], word_level: bool = False, user_dict: str | None = None):
        self.tokens = list(tokens)
        self.index: dict[str, int] = {}
        for i, t in enumerate(self.tokens):
            self.index.setdefault(t, i)  # a duplicated vocab.txt line keeps its first id
        for s in SPECIALS[:4]:
            if s not in self.index:
                raise ValueError(f"vocabulary lacks the special token {s}")
        self.word_level = word_level
        self.user_dict = user_dict or None
        self.pad_id, self.unk_id = self.index["[PAD]"], self.index["[UNK]"]
        self.cls_id, self.sep_id = self.index["[CLS]"], self.index["[SEP]"]
        self.special_ids = frozenset(self.index[s] for s in SPECIALS if s in self.index)

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 1) -> Vocab:
        """Character vocabulary of `texts` (characters seen at least `min_count` times), by frequency."""
        counts = Counter(c for t in texts for c in t if not c.isspace())
        chars = sorted((c for c, n in counts.items() if n >= min_count), key=lambda c: (-counts[c], c))
        return cls(list(SPECIALS) + chars)

    def with_words(self, texts: Iterable[str], min_count: int = 5, max_words: int | None = None,
                   user_dict: str | None = None) -> Vocab:
        """A word-level vocabulary: this one plus the jieba words (>= 2 chars) seen `min_count` times,
        segmented with the jieba user dictionary at `user_dict` (a missing file is a ValueError naming it)."""
        counts = Counter(w for t in texts for w in segment(t, user_dict) if len(w) > 1 and not w.isspace())
        words = sorted((w for w, n in counts.items() if n >= min_count and w not in self.index),
                       key=lambda w: (-counts[w], w))
        return Vocab(self.tokens + words[:max_words], word_level=True, user_dict=user_dict)

    def pieces(self, text: str) -> list[str]:
        """The token strings of `text` (whitespace dropped)."""
        if not self.word_level:
            return [c for c in text if not c.isspace()]
        out = []
        for w in segment(text, self.user_dict):
            if w in self.index and len(w) > 1:
                out.append(w)
            else:
                out.extend(c for c in w if not c.isspace())
        return out

    def encode(self, text: str) -> list[int]:
        get, unk = self.index.get, self.unk_id
        return [get(p, unk) for p in self.pieces(text)]

    def decode(self, ids: Iterable[int], stop_at_sep: bool = True) -> str:
        """Text of `ids`, specials skipped; stops at the first [SEP] if `stop_at_sep`."""
        out = []
        for i in ids:
            i = int(i)
            if stop_at_sep and i == self.sep_id:
                break
            if i in self.special_ids or not 0 <= i < len(self.tokens):
                continue
            out.append(self.tokens[i])
        return "".join(out)


def init_word_embeddings(embedding: np.ndarray, char_vocab: Vocab, word_vocab: Vocab) -> np.ndarray:
    """Embedding matrix [len(word_vocab), H] from a character one [len(char_vocab), H].

    Tokens of `char_vocab` keep their rows; every other token w gets the mean of its characters' rows.
    """
    embedding = np.asarray(embedding)
    if embedding.shape[0] != len(char_vocab):
        raise ValueError(f"embedding has {embedding.shape[0]} rows, char_vocab has {len(char_vocab)} tokens")
    out = np.zeros((len(word_vocab), embedding.shape[1]), embedding.dtype)
    for i, tok in enumerate(word_vocab.tokens):
        j = char_vocab.index.get(tok)
        if j is not None:
            out[i] = embedding[j]
        else:
            rows = [char_vocab.index.get(c, char_vocab.unk_id) for c in tok]
            out[i] = embedding[rows].mean(axis=0)
    return out
