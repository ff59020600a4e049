"""Configs of the spaces experiments: frozen dataclasses with `quick` (embedded, CPU minutes) and `full`."""

from __future__ import annotations

import dataclasses
import enum
import os

from spaces.metrics import BACKENDS


class Softmax(enum.Enum):
    """The generator's output softmax: Sparse Softmax over the top `sparse_k` logits, or the dense one."""

    SPARSE = "sparse"
    DENSE = "dense"


@dataclasses.dataclass(frozen=True)
class Variant:
    """One generator of the ablation: its softmax, and whether it trains with the copy loss (then it is
    decoded both with and without the copy constraint; without the loss, only unconstrained)."""

    softmax: Softmax
    copy: bool

    @classmethod
    def parse(cls, text: str) -> Variant:
        """"<sparse|dense>-<copy|nocopy>" (the config's `variants` entries); ValueError naming the entry."""
        softmax, _, copy = text.partition("-")
        if softmax not in ("sparse", "dense") or copy not in ("copy", "nocopy"):
            raise ValueError(f"config.variants entry {text!r} must be '<sparse|dense>-<copy|nocopy>'")
        return cls(Softmax(softmax), copy == "copy")

    @property
    def name(self) -> str:
        """The config's spelling, which also names the checkpoint directory: e.g. "sparse-copy"."""
        return f"{self.softmax.value}-{'copy' if self.copy else 'nocopy'}"

    def decodings(self) -> tuple[bool, ...]:
        """The `use_copy` settings it is decoded with."""
        return (True, False) if self.copy else (False,)

    def label(self, use_copy: bool) -> str:
        """The report's name of one decoding, e.g. "sparse softmax, copy decoding"."""
        return (f"{self.softmax.value} softmax, {'copy decoding' if use_copy else 'no copy constraint'}"
                + ("" if self.copy else " (no copy loss)"))


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Labelling -> k-fold DGCNN extractor -> copy-BIO UniLM generator, end to end.

    Data: `data_dir` empty means embedded synthetic documents (`n_train` / `n_test`); otherwise
    `data_dir/train.jsonl` (CAIL2020 format) split into train / test by `n_test`.
    Scores: `scorer` "spaces" (rouge 1.0.0 as bojone/SPACES ran it; `spaces.metrics`) or "rouge-score",
    for the labelling (characters) and the evaluation (jieba words, `HMM=False`, with the jieba user
    dictionary at `user_dict` if given, as SPACES' `datasets/user_dict.txt`; also used by the word vocabulary).
    Generator: from scratch (`checkpoint_dir` empty) or from a local HF BERT directory
    (config.json, vocab.txt, model.safetensors). `variants` names the generators trained, each
    "<softmax>-<copy>" with softmax in {sparse, dense} and copy in {copy, nocopy} (copy loss weight 0,
    unconstrained decoding); every generator trained with copy is also decoded without the constraint.
    """

    seed: int = 0
    # data
    data_dir: str = ""
    n_train: int = 240
    n_test: int = 40
    max_clauses: int = 256
    scorer: str = "spaces"
    user_dict: str = ""
    # extractor
    folds: int = 4
    clause_len: int = 24
    encoder_dim: int = 32
    extractor_dim: int = 32  # 384 in SPACES (the full preset)
    extractor_dropout: float = 0.1
    extractor_steps: int = 80
    extractor_batch: int = 16
    extractor_lr: float = 2e-3
    threshold: float = 0.2
    # generator
    checkpoint_dir: str = ""
    hidden: int = 96
    layers: int = 2
    heads: int = 4
    intermediate: int = 192
    relative_position: bool = False
    max_source: int = 128
    max_target: int = 110
    word_vocab: bool = False
    oracle_fraction: float = 0.5  # P(a draw feeds the generator the oracle clauses), redrawn each time (SPACES: 1/2)
    sparse_k: int = 10
    copy_weight: float = 2.0
    noise: float = 0.15
    ema: float = 0.99
    generator_steps: int = 180
    generator_batch: int = 16
    generator_lr: float = 2e-3
    warmup_steps: int = 30
    variants: tuple[str, ...] = ("sparse-copy", "dense-copy")
    beam_size: int = 3
    decode_batch: int = 20
    checkpoint_every: int = 0
    examples: int = 3

    def __post_init__(self):
        for name in ("n_train", "n_test", "max_clauses", "folds", "clause_len", "extractor_steps", "extractor_batch",
                     "hidden", "layers", "heads", "max_source", "max_target", "generator_steps", "generator_batch",
                     "beam_size", "decode_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"config.{name} must be >= 1, got {getattr(self, name)}")
        if self.folds < 2:
            raise ValueError(f"config.folds must be >= 2, got {self.folds}")
        if not 0.0 <= self.noise < 1.0 or not 0.0 <= self.oracle_fraction <= 1.0:
            raise ValueError("config.noise must lie in [0, 1) and config.oracle_fraction in [0, 1]")
        if self.scorer not in BACKENDS:
            raise ValueError(f"config.scorer must be one of {BACKENDS}, got {self.scorer!r}")
        if self.user_dict and not os.path.isfile(self.user_dict):
            raise ValueError(f"config.user_dict: jieba user dictionary {self.user_dict!r} does not exist")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"config.threshold must lie in (0, 1), got {self.threshold}")
        self.generators()  # each entry parses

    def generators(self) -> tuple[Variant, ...]:
        """`variants` as typed `Variant`s, in order."""
        return tuple(Variant.parse(v) for v in self.variants)

    def sparse_k_of(self, variant: Variant) -> int:
        """Sparse Softmax's k for `variant` (0: dense)."""
        return self.sparse_k if variant.softmax is Softmax.SPARSE else 0

    def copy_weight_of(self, variant: Variant) -> float:
        """The copy loss's weight for `variant` (0 without the copy loss)."""
        return self.copy_weight if variant.copy else 0.0


QUICK = PipelineConfig()

# CAIL2020 with a local pretrained checkpoint (SPACES: NEZHA-base at 1,024 tokens; HF ships no NEZHA any
# more, so a Chinese BERT with the NEZHA-style relative-position option at 1,024 tokens, or BERT at 512 with
# the source truncated, relative_position=False, max_source=400).
FULL = dataclasses.replace(
    QUICK, data_dir="data/cail2020", n_train=9484 - 500, n_test=500, folds=15, clause_len=64, extractor_dim=384,
    extractor_steps=20_000, extractor_batch=32, extractor_lr=1e-3, checkpoint_dir="checkpoints/chinese_wwm_base",
    hidden=768, layers=12, heads=12, intermediate=3072, relative_position=True, max_source=1024 - 400 - 3,
    max_target=400, word_vocab=True, ema=0.9999, generator_steps=50 * (9484 // 8), generator_batch=8,
    generator_lr=2e-5, warmup_steps=1000, variants=("sparse-copy",), beam_size=3, decode_batch=8,
    checkpoint_every=2000)
