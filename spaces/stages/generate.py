"""Stage 3, generation: one copy-BIO UniLM generator per `Variant`, trained and decoded.

Each generator trains on the shared trainer (`train_generator`: checkpoints under
`checkpoints/<variant name>/`, exact `--resume`), each draw feeding it the oracle or the out-of-fold
extracted clauses (SPACES); decoding is beam search over the test documents' extractions, with the
copy constraint and, for a generator trained with the copy loss, also without it.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from shared.experiment import RunContext
from shared.train import TrainState
from spaces.configs import PipelineConfig, Variant
from spaces.labelling import oracle_text
from spaces.stages.extract import Extraction
from spaces.stages.label import Corpus

__all__ = ["GeneratorState", "Generation", "run_generator", "training_examples", "build_generator",
           "make_generator_trainer", "train_generator", "decode_summaries"]


class GeneratorState(TrainState):
    """The harness's `TrainState` plus `ema`, the exponential moving average of `params` that decoding
    uses (updated inside the jitted step, checkpointed and resumed with the rest)."""

    ema: Any


def build_generator(config: PipelineConfig, vocab, seed: int, char_vocab=None):
    """A `CopyGenerator` from scratch or from `config.checkpoint_dir` (HF BERT directory).

    With a word-level `vocab` over the checkpoint's `char_vocab`, the word embeddings start as the mean
    of their characters' (`init_word_embeddings`) and the MLM bias of new words at 0.
    """

    from shared import unilm
    from spaces.generator import CopyGenerator
    from spaces.vocab import init_word_embeddings

    max_len = config.max_source + config.max_target + 3
    if config.checkpoint_dir:
        from shared.hf_bert import load_hf_bert

        lm, _ = load_hf_bert(config.checkpoint_dir, relative_position=config.relative_position)
        if not config.relative_position and max_len > lm.config.max_position:
            raise ValueError(f"max_source + max_target + 3 = {max_len} exceeds the checkpoint's max_position "
                             f"{lm.config.max_position}; set relative_position=True or shorten the source")
        if len(vocab) > lm.config.vocab_size:
            table = init_word_embeddings(np.asarray(lm.word.embedding[...]), char_vocab, vocab)
            lm.word = nnx.Embed(len(vocab), lm.config.hidden, rngs=nnx.Rngs(seed))
            lm.word.embedding.value = jnp.asarray(table)
            bias = np.asarray(lm.mlm_bias[...])
            lm.mlm_bias = nnx.Param(jnp.asarray(np.concatenate([bias, np.zeros(len(vocab) - len(bias), bias.dtype)])))
            lm.config = dataclasses.replace(lm.config, vocab_size=len(vocab))
    else:
        lm = unilm.create(unilm.TINY, vocab_size=len(vocab), hidden=config.hidden, layers=config.layers,
                          heads=config.heads, intermediate=config.intermediate, max_position=max_len,
                          relative_position=config.relative_position, dropout=0.0, seed=seed)
    return CopyGenerator(lm, rngs=nnx.Rngs(seed + 1))


def make_generator_trainer(config: PipelineConfig, model, *, sparse_k: int, copy_weight: float):
    """The generator's `shared.trainer.Trainer` (Adam with warm-up and cosine decay, clipped gradients, the
    copy-BIO loss, an EMA of the weights in a `GeneratorState`); also what `kexue eval | predict` restore into."""
    from shared import train
    from shared.trainer import Trainer
    from spaces.generator import ema_update, generator_loss

    schedule = train.warmup_cosine(config.generator_lr, config.warmup_steps, config.generator_steps,
                                   end_fraction=0.05)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))
    loss = generator_loss(sparse_k=sparse_k, copy_weight=copy_weight)

    def with_ema(step):
        def step_with_ema(state, batch):
            state, metrics = step(state, batch)
            t = state.step.astype(jnp.float32)
            decay = jnp.minimum(config.ema, (1.0 + t) / (10.0 + t))  # EMA warm-up for short runs
            return state.replace(ema=ema_update(state.ema, state.params, decay)), metrics

        return step_with_ema

    def add_ema(state: TrainState) -> GeneratorState:
        return GeneratorState(**{f.name: getattr(state, f.name) for f in dataclasses.fields(state)}, ema=state.params)

    return Trainer(model, tx, loss, seed=config.seed, learning_rate=schedule, wrap_step=with_ema, extend_state=add_ema)


def train_generator(config: PipelineConfig, model, arrays: dict[str, np.ndarray], *, sparse_k: int,
                    copy_weight: float, name: str, ctx: RunContext | None = None):
    """Trains a generator through `shared.trainer` (data-parallel mesh, batches indexed by step, checkpoints
    under `ctx.checkpoint_dir / name`, exact `--resume`); returns (graphdef, EMA weights to decode with,
    history).

    arrays: "ids" int [N, 2, T] and "source_len" [N, 2] (`spaces.generator_data.encode_generator_examples`);
    every draw goes through `make_train_transform` (SPACES: oracle or extracted input, noise, copy labels on
    the noised source), so each epoch draws anew; global batches of `config.generator_batch` (a fresh
    permutation every epoch). The state is a `GeneratorState`: each step also updates the EMA.
    """
    from shared import data
    from shared.trainer import Loop, check_global_batch
    from spaces.generator_data import make_train_transform

    check_global_batch(config.generator_batch, "generator_batch")
    trainer = make_generator_trainer(config, model, sparse_k=sparse_k, copy_weight=copy_weight)
    loop = Loop(num_steps=config.generator_steps, batch_size=config.generator_batch, seed=config.seed + 1,
                log_every=min(50, config.generator_steps), checkpoint_every=config.checkpoint_every,
                batch_field="generator_batch")
    source = data.ArraySource({k: arrays[k] for k in ("ids", "source_len")})
    draw = make_train_transform(pad_id=model.lm.config.pad_id, noise=config.noise,
                                oracle_fraction=config.oracle_fraction)
    state, history = trainer.fit(source, loop, ctx=ctx, name=name, config=config, desc=name, random_transform=draw)
    assert isinstance(state, GeneratorState)  # extend_state=add_ema
    return trainer.graphdef, (state.ema, state.model_state), history


def decode_summaries(graphdef, weights, vocab, sources: list[str], config: PipelineConfig, *, use_copy: bool,
                     top_k: int) -> list[str]:
    """Beam search (`config.beam_size`) for every source text; returns the decoded summaries."""
    from shared.data import map_fixed_batches
    from spaces.copy_decoding import make_generate
    from spaces.generator import encode_pairs

    run = make_generate(graphdef, beam_size=config.beam_size, max_new=config.max_target + 1, eos_id=vocab.sep_id,
                        use_copy=use_copy, top_k=top_k)

    if not sources:
        return []
    enc = encode_pairs(vocab, sources, None, config.max_source, 0)
    tokens = map_fixed_batches(lambda ids, lens: run(tuple(weights), ids, lens).tokens[:, 0],
                               (enc["ids"], enc["source_len"]), config.decode_batch)
    return [vocab.decode(t) for t in tokens]


@dataclasses.dataclass(frozen=True)
class Generation:
    """One trained generator's output.

    Attributes:
      variant: which generator.
      summaries: per decoding (`Variant.label(use_copy)`), the test documents' decoded summaries.
      history: the trainer's history.
      seconds: "train" and per decoding "decode_<use_copy>" wall times.
    """

    variant: Variant
    summaries: dict[str, list[str]]
    history: list[dict]
    seconds: dict[str, float]


def training_examples(corpus: Corpus, extraction: Extraction, config: PipelineConfig) -> dict[str, np.ndarray]:
    """The generator's training arrays: each training document's out-of-fold extraction and oracle clauses
    (one of the two drawn at every draw, SPACES) with its summary (`encode_generator_examples`)."""
    from spaces.generator_data import encode_generator_examples

    n_tr, clauses = corpus.n_train, corpus.clauses
    return encode_generator_examples(corpus.vocab, [oracle_text(clauses[d], extraction.extracted[d])
                                                    for d in range(n_tr)],
                                     [oracle_text(clauses[d], corpus.chosen[d]) for d in range(n_tr)],
                                     [d.summary for d in corpus.train_docs], config.max_source, config.max_target)


def run_generator(corpus: Corpus, arrays: dict[str, np.ndarray], sources: list[str], variant: Variant,
             config: PipelineConfig, ctx: RunContext | None = None) -> Generation:
    """Trains `variant`'s generator on `arrays` (`training_examples`) and decodes `sources` (the test
    documents' extracted texts) with each of its decodings."""
    t = time.perf_counter()
    sparse_k = config.sparse_k_of(variant)
    model = build_generator(config, corpus.vocab, config.seed, corpus.char_vocab)
    graphdef, weights, history = train_generator(config, model, arrays, sparse_k=sparse_k,
                                                 copy_weight=config.copy_weight_of(variant), name=variant.name,
                                                 ctx=ctx)
    seconds = {"train": time.perf_counter() - t}
    summaries = {}
    for use_copy in variant.decodings():
        t = time.perf_counter()
        summaries[variant.label(use_copy)] = decode_summaries(graphdef, weights, corpus.vocab, sources, config,
                                                              use_copy=use_copy, top_k=sparse_k)
        seconds[f"decode_{use_copy}"] = time.perf_counter() - t
    return Generation(variant, summaries, history, seconds)
