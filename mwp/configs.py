"""Configs of the mwp experiments: frozen dataclasses, `quick` (embedded, CPU minutes) and `full` presets."""

from __future__ import annotations

import dataclasses

from mwp.tokenizer import EXPRESSION_TOKENS


def _check_expression_tokens(value: str) -> None:
    if value not in EXPRESSION_TOKENS:
        raise ValueError(f"config.expression_tokens must be one of {EXPRESSION_TOKENS}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """A small UniLM trained from scratch on `mwp.synthetic` problems (character vocabulary)."""

    seed: int = 0
    train_size: int = 4000
    valid_size: int = 100
    test_size: int = 300
    number_slots: bool = True  # numbers -> [N0], [N1], ... in question and equation
    expression_tokens: str = "digits"  # numbers digit by digit, or "wordpiece" (number words from the data)
    input_noise: float = 0.15  # train-time probability of replacing a question character by a random one
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    mlp: int = 256
    dropout: float = 0.0
    max_source: int = 56  # the longest synthetic question is 53 characters
    max_target: int = 16  # the longest equation is 15 pieces
    learning_rate: float = 2e-3
    warmup_steps: int = 30
    batch_size: int = 64
    num_steps: int = 240
    log_every: int = 50
    checkpoint_every: int = 0
    eval_batch_size: int = 100
    beams: tuple[int, ...] = (1, 2, 3)

    def __post_init__(self):
        for name in ("train_size", "valid_size", "test_size", "hidden", "layers", "heads", "mlp", "max_source",
                     "max_target", "batch_size", "num_steps", "log_every", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"config.{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"config.learning_rate must be > 0, got {self.learning_rate}")
        if not self.beams or min(self.beams) < 1:
            raise ValueError(f"config.beams must be non-empty positive ints, got {self.beams}")
        _check_expression_tokens(self.expression_tokens)


SYNTHETIC_QUICK = SyntheticConfig()
SYNTHETIC_FULL = dataclasses.replace(SYNTHETIC_QUICK, train_size=50_000, valid_size=1000, test_size=2000,
                                     hidden=256, layers=4, mlp=1024, num_steps=10_000, number_slots=False,
                                     learning_rate=5e-4, warmup_steps=500, log_every=500, checkpoint_every=1000,
                                     max_target=40)  # digits one by one without number slots


@dataclasses.dataclass(frozen=True)
class Ape210kConfig:
    """BERT (HF checkpoint directory) fine-tuned as UniLM on the real Ape210K files (the post's recipe)."""

    seed: int = 0
    data_dir: str = "data/ape210k"  # train.ape.json, valid.ape.json, test.ape.json
    checkpoint_dir: str = "checkpoints/chinese_L-12_H-768_A-12"  # config.json, vocab.txt, model.safetensors
    size: str = "base"  # base | large | tiny
    simplified_vocab: bool = True
    expression_tokens: str = "wordpiece"  # equations tokenised by WordPiece as the baseline, or "digits"
    learning_rate: float = 2e-5
    batch_size: int = 32  # 16 for large
    epochs: int = 100  # the baseline's budget; the best epoch on valid is kept (base ~25, large ~15 in the post)
    max_source: int = 189  # 192 in total with [CLS] and two [SEP]
    max_target: int = 64
    eval_batch_size: int = 64
    beams: tuple[int, ...] = (1, 2, 3)
    limit: int = 0  # read only this many lines per file (0: all)
    bf16: bool = True
    log_every: int = 200
    checkpoint_every: int = 2000

    def __post_init__(self):
        if self.size not in ("tiny", "base", "large"):
            raise ValueError(f"config.size must be tiny, base or large, got {self.size!r}")
        for name in ("batch_size", "epochs", "max_source", "max_target", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"config.{name} must be >= 1, got {getattr(self, name)}")
        _check_expression_tokens(self.expression_tokens)


APE210K_FULL = Ape210kConfig()
APE210K_LARGE = dataclasses.replace(APE210K_FULL, size="large", batch_size=16,
                                    checkpoint_dir="checkpoints/chinese-roberta-wwm-ext-large")
APE210K_QUICK = dataclasses.replace(APE210K_FULL, size="tiny", epochs=1, limit=200, batch_size=8, bf16=False)
