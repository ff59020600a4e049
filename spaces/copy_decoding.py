"""Copy-constrained, top-k sparse beam search through `shared.decoding`'s logits-processor hook.

At each step the copy head predicts the label of the next token from the hidden state of the token
just consumed (`aux["hidden"]`), and (SPACES, kexue 8046):
  O: the next token is free;
  B: the next token must occur in the source;
  I: the next token must continue the current copied n-gram somewhere in the source; if no source
     occurrence of that n-gram has a continuation, fall back to B;
  I may not follow O (the I logit is masked while the previous label was O, and at the first step).
Then only the k (= 10) largest remaining logits are kept (Sparse Softmax decoding: the log-softmax
of `beam_search` renormalises over them).

Fixed shapes: instead of n-gram hash tables, the carry holds `cand` bool [N, S], the source positions
whose token was allowed at the previous step. After the token y is emitted, the positions that
continue the copied n-gram are run[p] = cand[p − 1] ∧ src[p − 1] = y, so cand tracks every source
occurrence of the current n-gram (of any n) in O(S) per step; the allowed vocabulary is a scatter of
`cand` through the source tokens. Only content positions (not [CLS] / [SEP]) are copyable, so
[SEP] (end) is only reachable under an O label.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
from flax import nnx

from shared.decoding import DecodeResult, Processor, unilm_generate
from shared.sparse_softmax import top_k_mask
from spaces.generator import I, O

if TYPE_CHECKING:
    from spaces.generator import CopyGenerator

__all__ = ["copy_processor", "initial_carry", "top_k_logits", "generate", "make_generate"]

NEG_INF = -jnp.inf


def top_k_logits(logits: jax.Array, k: int) -> jax.Array:
    """logits [N, V] with all but the k largest set to −inf (exactly k kept, ties by lower index).

    Uses `shared.sparse_softmax.top_k_mask` (two-stage top-k): on CPU `lax.top_k` over a large
    vocabulary is far slower per call and alone slowed constrained decoding (`benchmarks/bench_spaces.py`;
    figures in benchmarks/RESULTS.md, spaces).
    """
    return jnp.where(top_k_mask(logits, k), logits, NEG_INF)


def copy_processor(copy_logits_fn: Callable[[jax.Array], jax.Array], source: jax.Array, copyable: jax.Array, *,
                   use_copy: bool = True, top_k: int = 10) -> Processor:
    """The `processor(logits, aux, carry) -> (logits, carry)` for `shared.decoding.beam_search`.

    Args:
      copy_logits_fn: hidden [N, H] -> copy logits [N, 3] (O, B, I).
      source: int [N, S], the prefix of each beam (row n = batch n // beams); copyable: bool [N, S].
      use_copy: apply the B/I/O constraint; top_k: keep the k largest logits (0: all).
    Carry: {"cand": bool [N, S], "active": bool [N]} (previous step's allowed positions, previous label
    was B or I); start from `initial_carry`.
    """
    n = source.shape[0]

    def processor(logits, aux, carry):
        v = logits.shape[-1]
        if use_copy:
            tok = aux["token"]  # [N], the token just emitted
            hit = carry["cand"] & (source == tok[:, None])
            run = jnp.pad(hit[:, :-1], ((0, 0), (1, 0))) & copyable & carry["active"][:, None]  # [N, S]
            lab = copy_logits_fn(aux["hidden"])  # [N, 3]
            no_i = (jnp.arange(3) == I)[None, :] & ~carry["active"][:, None]
            label = jnp.where(no_i, NEG_INF, lab).argmax(-1)  # [N]
            fallback = jnp.where(run.any(-1, keepdims=True), run, copyable)
            cand = jnp.where((label == I)[:, None], fallback, copyable)
            rows = jnp.arange(n)[:, None]
            allowed = jnp.zeros((n, v), jnp.int32).at[rows, source].add(cand.astype(jnp.int32)) > 0
            constrained = label != O
            logits = jnp.where(constrained[:, None] & ~allowed, NEG_INF, logits)
            carry = {"cand": cand, "active": constrained}
        if top_k:
            logits = top_k_logits(logits, min(top_k, v))
        return logits, carry

    return processor


def initial_carry(batch: int, source_length: int) -> dict:
    return {"cand": jnp.zeros((batch, source_length), bool), "active": jnp.zeros((batch,), bool)}


def generate(model: CopyGenerator, source: jax.Array, source_len: jax.Array, *, beam_size: int, max_new: int,
             eos_id: int, use_copy: bool = True, top_k: int = 10) -> DecodeResult:
    """Beam search from a `CopyGenerator` on `[CLS] source [SEP]` prefixes (int [B, S], lengths [B]).

    As SPACES' bert4keras `beam_search`, finished non-best beams are dropped and the beam shrinks
    (`shared.decoding.beam_search(drop_finished=True)`).
    """
    b, s = source.shape
    pos = jnp.arange(s)[None, :]
    copyable = (pos >= 1) & (pos < source_len[:, None] - 1)  # content tokens only
    kwargs: dict[str, Any] = {}
    if use_copy or top_k:
        def rep(x):
            return jnp.repeat(x, beam_size, axis=0)
        kwargs = dict(processor=copy_processor(model.copy_logits, rep(source), rep(copyable),
                                               use_copy=use_copy, top_k=top_k),
                      processor_carry=initial_carry(b, s))
    return unilm_generate(model.lm, source, source_len, beam_size=beam_size, max_new=max_new, eos_id=eos_id,
                          drop_finished=True, **kwargs)


def make_generate(graphdef: nnx.GraphDef, **kwargs: Any) -> Callable[[Any, jax.Array, jax.Array], DecodeResult]:
    """A jitted `(states, source, source_len) -> DecodeResult` for `generate` with fixed keyword settings.

    `states` is one nnx State or a tuple of them (e.g. `(params, rest)`), merged with `graphdef`.
    """

    @jax.jit
    def run(states, source, source_len):
        states = states if isinstance(states, tuple) else (states,)
        return generate(nnx.merge(graphdef, *states), source, source_len, **kwargs)

    return run
