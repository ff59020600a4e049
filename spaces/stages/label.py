"""Stage 1, labelling: documents -> clauses, the clauses each summary needs, and the vocabularies.

Labels: the greedy monotone clause alignment of each summary (`spaces.labelling.extract_matching`,
scored by `config.scorer`). Vocabularies: characters of the training texts (or the checkpoint's
vocab.txt), plus jieba words with `config.word_vocab`; both are saved in the run directory
(`save_vocabularies`) so a trained run can be used without its training data.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import random

from spaces.configs import PipelineConfig
from spaces.data import Document, document_clauses, load_cail2020, split_clauses
from spaces.labelling import extract_matching
from spaces.vocab import Vocab

__all__ = ["Corpus", "label_corpus", "label_documents", "load_documents", "save_vocabularies", "load_vocabularies",
           "VOCAB_FILE"]

VOCAB_FILE = "vocab.json"


@dataclasses.dataclass(frozen=True)
class Corpus:
    """What the later stages read: the documents, their clauses and labels, the vocabularies.

    Attributes:
      train_docs, test_docs: the documents; `docs` is train then test, and so are `clauses` and `chosen`.
      clauses: each document's clauses (`spaces.data.document_clauses`).
      chosen: each document's labelled clause indices.
      char_vocab: the clause encoder's character vocabulary (the checkpoint's with `checkpoint_dir`).
      vocab: the generator's vocabulary (`char_vocab`, plus jieba words with `word_vocab`).
    """

    train_docs: list[Document]
    test_docs: list[Document]
    clauses: list[list[str]]
    chosen: list[list[int]]
    char_vocab: Vocab
    vocab: Vocab

    @property
    def docs(self) -> list[Document]:
        return self.train_docs + self.test_docs

    @property
    def n_train(self) -> int:
        return len(self.train_docs)


def load_documents(config: PipelineConfig) -> tuple[list[Document], list[Document]]:
    """(train, test) documents: `config.data_dir/train.jsonl` shuffled by `config.seed`, else synthetic ones."""
    if config.data_dir:
        docs = load_cail2020(pathlib.Path(config.data_dir) / "train.jsonl")
        rng = random.Random(config.seed)
        rng.shuffle(docs)
        return docs[config.n_test:config.n_test + config.n_train], docs[:config.n_test]
    from spaces.synthetic import synthetic_documents

    docs = synthetic_documents(config.n_train + config.n_test, config.seed, summary_style="short")
    return docs[:config.n_train], docs[config.n_train:]


def label_documents(docs: list[Document], max_clauses: int,
                    scorer: str = "spaces") -> tuple[list[list[str]], list[list[int]]]:
    """Clauses of every document and the indices chosen by the greedy alignment (scored by `scorer`)."""
    clauses = [document_clauses(d, max_clauses) for d in docs]
    chosen = [extract_matching(c, split_clauses(d.summary, None), scorer) for c, d in zip(clauses, docs)]
    return clauses, chosen


def label_corpus(config: PipelineConfig) -> Corpus:
    """Loads and labels the documents and builds the vocabularies from the training documents."""
    train_docs, test_docs = load_documents(config)
    clauses, chosen = label_documents(train_docs + test_docs, config.max_clauses, config.scorer)
    if config.checkpoint_dir:
        from shared.hf_bert import read_vocab

        char_vocab = Vocab(read_vocab(pathlib.Path(config.checkpoint_dir) / "vocab.txt"))
    else:
        char_vocab = Vocab.build([d.text for d in train_docs] + [d.summary for d in train_docs])
    vocab = char_vocab
    if config.word_vocab:
        vocab = char_vocab.with_words([d.summary for d in train_docs] + [d.text for d in train_docs],
                                      user_dict=config.user_dict or None)
    return Corpus(train_docs, test_docs, clauses, chosen, char_vocab, vocab)


def save_vocabularies(path: pathlib.Path, corpus: Corpus) -> None:
    """Writes both vocabularies as JSON: {"char": tokens, "generator": tokens, "word_level", "user_dict"}."""
    path.write_text(json.dumps({"char": corpus.char_vocab.tokens, "generator": corpus.vocab.tokens,
                                "word_level": corpus.vocab.word_level, "user_dict": corpus.vocab.user_dict},
                               ensure_ascii=False))


def load_vocabularies(path: pathlib.Path) -> tuple[Vocab, Vocab]:
    """(char_vocab, generator vocab) as `save_vocabularies` wrote them."""
    saved = json.loads(path.read_text())
    return Vocab(saved["char"]), Vocab(saved["generator"], word_level=saved["word_level"],
                                       user_dict=saved["user_dict"])
