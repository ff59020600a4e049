"""Tokenisation for the seq2seq solver: a character vocabulary for embedded runs and WordPiece from a
local `vocab.txt` for pretrained BERTs, both with an expression tokeniser that round-trips.

Expressions are split into ".", the operators `+ - * / **` (`**` is one piece), brackets, number slots
`[N0]`, `[N1]`, ... and numbers, and `decode_expression` joins the pieces without spaces, so
`decode_expression(encode_expression(e)) == e` for every expression `e` (spaces dropped). Numbers are
tokenised in one of two ways (`expression_tokens`):

- "digits": one digit per token (`split_expression`);
- "wordpiece": each run of digits by BERT's greedy longest-match-first WordPiece over the vocabulary
  ("150" -> "150" if the vocabulary has it, else e.g. "15", "##0"), as the baseline's tokenizer does
  with the whole `[CLS] question [SEP] equation [SEP]` pair; "." is a piece of its own (BERT splits on
  punctuation), and a run WordPiece cannot cover falls back to digits. The baseline's tokenizer writes
  `**` as two "*" tokens; here it is one token (an unused vocabulary entry for WordPiece vocabularies).

Either way no number ever becomes `[UNK]`, and questions tokenise their numbers the same way.

Optional number slots (`number_slots`): numbers of the question are replaced by `[N0]`, `[N1]`, ... in
order of first appearance, and the same literals in the equation by the same slots; `fill_slots`
puts the numbers back before `safe_eval` (the "number mapping" of Wang et al. 2017, Math23K).
"""

from __future__ import annotations

import abc
import collections
import pathlib
import re
from collections.abc import Container, Iterable, Sequence

from mwp.expressions import ExpressionError

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIALS = (PAD, UNK, CLS, SEP, MASK)
EXPRESSION_PIECES = tuple("0123456789") + (".", "+", "-", "*", "/", "**", "(", ")")
MAX_SLOTS = 16
SLOTS = tuple(f"[N{i}]" for i in range(MAX_SLOTS))

EXPRESSION_TOKENS = ("digits", "wordpiece")
WORDPIECE_DIGITS = tuple(f"##{d}" for d in "0123456789")  # continuation pieces: every digit run is covered

_PIECE = re.compile(r"\[N[0-9]+\]|\*\*|\S", re.S)
_RUN_PIECE = re.compile(r"\[N[0-9]+\]|\*\*|[0-9]+|\S", re.S)  # as _PIECE, digit runs whole
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_DIGIT_RUN = re.compile(r"[0-9]+")


def split_expression(expr: str) -> list[str]:
    """Expression -> pieces: one digit each, '.', + - * / **, brackets, slots; spaces dropped.

    Example: "12**2-[N0]" -> ["1", "2", "**", "2", "-", "[N0]"].
    """
    return _PIECE.findall(expr)


def wordpiece(word: str, vocab: Container[str]) -> list[str] | None:
    """BERT's greedy longest-match-first WordPiece of one word: the longest prefix in `vocab`, then the
    longest "##"-prefixed continuation, and so on; None when some remainder has no piece (BERT's [UNK]).

    Example: with "15" and "##0" in vocab but not "150", "150" -> ["15", "##0"].
    """
    pieces, start = [], 0
    while start < len(word):
        for end in range(len(word), start, -1):
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                break
        else:
            return None
        pieces.append(piece)
        start = end
    return pieces


def join_expression(pieces: Iterable[str]) -> str:
    """The inverse of `split_expression` (pieces concatenated, no spaces)."""
    return "".join(pieces)


def number_slots(question: str, equation: str) -> tuple[str, str, list[str]]:
    """Replaces the question's numbers by slots `[Ni]` (first appearance order) in question and equation.

    Returns (question with slots, equation with slots, the numbers as strings). Equation numbers
    that are not in the question (constants such as 1, 2, 100) stay digits.
    """
    numbers: list[str] = []

    def slot(match: re.Match) -> str:
        literal = match.group(0)
        if literal not in numbers:
            if len(numbers) == MAX_SLOTS:
                return literal
            numbers.append(literal)
        return SLOTS[numbers.index(literal)]

    question_s = _NUMBER.sub(slot, question)
    equation_s = _NUMBER.sub(lambda m: SLOTS[numbers.index(m.group(0))] if m.group(0) in numbers
                             else m.group(0), equation)
    return question_s, equation_s, numbers


def fill_slots(expr: str, numbers: Sequence[str]) -> str:
    """Puts the numbers back into an expression with slots; an unknown slot raises ExpressionError."""
    def fill(match: re.Match) -> str:
        i = int(match.group(0)[2:-1])
        if i >= len(numbers):
            raise ExpressionError(f"slot {match.group(0)} has no number (question has {len(numbers)})", "slot")
        return numbers[i]
    return re.sub(r"\[N[0-9]+\]", fill, expr)


def _check_mode(expression_tokens: str) -> str:
    if expression_tokens not in EXPRESSION_TOKENS:
        raise ValueError(f"expression_tokens must be one of {EXPRESSION_TOKENS}, got {expression_tokens!r}")
    return expression_tokens


class _Base(abc.ABC):
    """Shared encode/decode of expressions and pairs; subclasses define `encode_question`."""

    token_to_id: dict[str, int]
    id_to_token: list[str]
    expression_tokens: str

    @property
    def vocab_size(self) -> int:
        return len(self.id_to_token)

    @property
    def pad_id(self) -> int:
        return self.token_to_id[PAD]

    @property
    def unk_id(self) -> int:
        return self.token_to_id[UNK]

    @property
    def cls_id(self) -> int:
        return self.token_to_id[CLS]

    @property
    def sep_id(self) -> int:
        return self.token_to_id[SEP]

    def _piece_id(self, piece: str) -> int:
        return self.token_to_id.get(piece, self.unk_id)

    def _id_piece(self, i: int) -> str:
        token = self.id_to_token[i] if 0 <= i < len(self.id_to_token) else UNK
        return token[2:] if token.startswith("##") else token

    def _number_pieces(self, run: str) -> list[str]:
        """One run of digits -> pieces: WordPiece in "wordpiece" mode (digits where it fails), else digits."""
        if self.expression_tokens == "wordpiece":
            pieces = wordpiece(run, self.token_to_id)
            if pieces is not None:
                return pieces
        return list(run)

    def expression_pieces(self, expr: str) -> list[str]:
        """Expression -> pieces (see the module docstring); spaces dropped."""
        if self.expression_tokens == "digits":
            return split_expression(expr)
        return [q for p in _RUN_PIECE.findall(expr) for q in (self._number_pieces(p) if p[0].isdigit() else [p])]

    def encode_expression(self, expr: str) -> list[int]:
        """Expression -> ids (one per `expression_pieces` piece); no [CLS]/[SEP]."""
        return [self._piece_id(p) for p in self.expression_pieces(expr)]

    def decode_expression(self, ids: Iterable[int]) -> str:
        """Ids -> expression string; stops at [SEP], skips [PAD]/[CLS]; [UNK] makes it invalid ("?")."""
        pieces = []
        for i in ids:
            i = int(i)
            if i == self.sep_id:
                break
            if i in (self.pad_id, self.cls_id):
                continue
            piece = self._id_piece(i)
            pieces.append("?" if piece == UNK else piece)
        return join_expression(pieces)

    @abc.abstractmethod
    def encode_question(self, text: str) -> list[int]:
        """Question text -> ids, no [CLS]/[SEP] (the character and WordPiece tokenizers each define it)."""

    def encode_pair(self, question: str, expression: str | None, max_source: int, max_target: int
                    ) -> tuple[list[int], list[int]]:
        """[CLS] question [SEP] expression [SEP] -> (token ids, segment ids 0/1).

        The question is truncated to `max_source` tokens (keeping the end, where the question sits);
        the expression to `max_target` tokens; with `expression=None` only the source part is returned.
        """
        q = self.encode_question(question)[-max_source:]
        source = [self.cls_id, *q, self.sep_id]
        if expression is None:
            return source, [0] * len(source)
        target = [*self.encode_expression(expression)[:max_target], self.sep_id]
        return source + target, [0] * len(source) + [1] * len(target)


class CharTokenizer(_Base):
    """A character vocabulary built from the data: specials, expression pieces, slots, number words (for
    "wordpiece"), then characters; ids from `char_start` on are ordinary characters."""

    def __init__(self, tokens: Sequence[str], expression_tokens: str = "digits"):
        if list(tokens[:len(SPECIALS)]) != list(SPECIALS):
            raise ValueError(f"tokens must start with {SPECIALS}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("tokens must be unique")
        self.id_to_token = list(tokens)
        self.token_to_id = {t: i for i, t in enumerate(tokens)}
        self.expression_tokens = _check_mode(expression_tokens)

    @property
    def char_start(self) -> int:
        """The first id of an ordinary character (after specials, expression pieces, slots, number words)."""
        for i, t in enumerate(self.id_to_token):
            number_word = t.startswith("##") or (len(t) > 1 and t.isascii() and t.isdigit())
            if i >= len(SPECIALS) and t not in EXPRESSION_PIECES and t not in SLOTS and not number_word:
                return i
        return len(self.id_to_token)

    @classmethod
    def build(cls, questions: Iterable[str], min_count: int = 1, *, expression_tokens: str = "digits",
              equations: Iterable[str] = ()) -> CharTokenizer:
        """Vocabulary of every character seen at least `min_count` times in `questions`.

        With `expression_tokens="wordpiece"` it also holds a WordPiece vocabulary for numbers, the way a
        BERT vocabulary comes from corpus counts: every run of digits seen at least `min_count` times in
        `questions` and `equations` as a word, and the continuations "##0" ... "##9".
        """
        _check_mode(expression_tokens)
        questions = list(questions)
        counts: collections.Counter[str] = collections.Counter()
        numbers: collections.Counter[str] = collections.Counter()
        for q in questions:
            counts.update(p for p in _PIECE.findall(q) if p not in SLOTS)
        fixed = (*SPECIALS, *EXPRESSION_PIECES, *SLOTS)
        words: tuple[str, ...] = ()
        if expression_tokens == "wordpiece":
            for text in (*questions, *equations):
                numbers.update(_DIGIT_RUN.findall(text))
            words = (*WORDPIECE_DIGITS, *sorted((w for w, n in numbers.items() if n >= min_count and len(w) > 1),
                                                key=lambda w: (len(w), w)))
        chars = sorted(c for c, n in counts.items() if n >= min_count and c not in fixed)
        return cls((*fixed, *words, *chars), expression_tokens)

    def encode_question(self, text: str) -> list[int]:
        pieces = _RUN_PIECE.findall(text.replace("**", "* *"))
        return [self._piece_id(q) for p in pieces for q in (self._number_pieces(p) if p[0].isdigit() else [p])]


class WordPieceTokenizer(_Base):
    """BERT WordPiece (via `tokenizers`) for questions from a local `vocab.txt`; expressions by
    `expression_tokens` ("wordpiece", the baseline, by default).

    `**` maps to the vocabulary's "**" if present, else to "[unused1]"; slots `[Ni]` map to
    "[unused{i+2}]". A question token that WordPiece makes [UNK] is re-tokenised character by
    character (so "12345" with no matching pieces becomes single digits, never [UNK]).
    """

    def __init__(self, vocab_path: str | pathlib.Path, lowercase: bool = True, expression_tokens: str = "wordpiece"):
        self.expression_tokens = _check_mode(expression_tokens)
        vocab_path = pathlib.Path(vocab_path)
        if not vocab_path.is_file():
            raise ValueError(f"vocab_path: no vocab.txt at {vocab_path}")
        self.id_to_token = vocab_path.read_text(encoding="utf-8").splitlines()
        self.token_to_id = {t: i for i, t in enumerate(self.id_to_token)}
        missing = [t for t in (*SPECIALS, *"0123456789", ".", "+", "-", "*", "/", "(", ")")
                   if t not in self.token_to_id]
        if missing:
            raise ValueError(f"vocab_path {vocab_path} lacks tokens {missing}")
        self._alias = {}
        if "**" not in self.token_to_id:
            self._alias["**"] = "[unused1]"
        for i, s in enumerate(SLOTS):
            self._alias[s] = f"[unused{i + 2}]"
        for piece, alias in list(self._alias.items()):
            if alias not in self.token_to_id:
                del self._alias[piece]
        self._unalias = {v: k for k, v in self._alias.items()}
        from tokenizers import BertWordPieceTokenizer

        self._wp = BertWordPieceTokenizer(str(vocab_path), lowercase=lowercase)

    def _piece_id(self, piece: str) -> int:
        if piece == "**" and "**" not in self.token_to_id and "**" not in self._alias:
            raise ExpressionError("vocabulary has no token for '**'", "vocab")
        return self.token_to_id.get(self._alias.get(piece, piece), self.unk_id)

    def _id_piece(self, i: int) -> str:
        token = super()._id_piece(i)
        return self._unalias.get(token, token)

    def encode_question(self, text: str) -> list[int]:
        ids = []
        for chunk in re.split(r"(\[N[0-9]+\])", text):
            if chunk in SLOTS:
                ids.append(self._piece_id(chunk))
                continue
            if not chunk:
                continue
            enc = self._wp.encode(chunk, add_special_tokens=False)
            for i, (start, end) in zip(enc.ids, enc.offsets):
                if i == self.unk_id:
                    ids.extend(self.token_to_id.get(c.lower() if c.isascii() else c, self.unk_id)
                               for c in chunk[start:end])
                else:
                    ids.append(i)
        return ids
