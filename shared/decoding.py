"""Greedy and beam search as one `lax.while_loop`, generic over a cached `step_fn` (t5x style).

The model is seen only through
  step_fn(token int [N], cache, step int32) -> (logits [N, V], aux, cache)
with N = batch * beams: it consumes the token chosen at `step` and returns the next-token logits.  The
prefix is run once by the caller (e.g. `UniLM.prefill`) giving `first_logits` [B, V] and a cache with
batch B; the cache (every leaf with ndim >= 1 has batch leading) is repeated over the beams and
reordered with them each step.  All shapes are fixed, so the whole search jits to one while loop.

Scoring (baseline, bojone/ape210k_baseline): a beam's score is its summed log-probability; without a
length penalty the search stops as soon as the best beam has emitted `eos_id` (a finished beam's score
no longer changes while every other beam's can only fall, so it stays best).  With `length_penalty`
alpha > 0 beams are ranked by score / ((5 + len) / 6)^alpha (Wu et al. 2016, arXiv 1609.08144, Eq. 14)
and the search stops when the best-ranked beam has ended or after `max_new` tokens.

Finished non-best beams: by default (`drop_finished=False`) they are kept, extended with `pad_id` at
log-prob 0, and can still win when every open beam's score falls below theirs.  With
`drop_finished=True` (the baseline, bert4keras `AutoRegressiveDecoder.beam_search`) every beam that
emits `eos_id` without being the best is dropped and the beam shrinks: the next step extends only the
w open beams and keeps the top w candidates; a batch row is frozen once its best beam has ended, and
after `max_new` tokens the best open beam is returned.  Dropped and unused slots have score -inf.

Logits processor: `processor(logits [N, V], aux, carry) -> (logits, carry)` is applied to the raw
logits before the log-softmax; `aux` is the step_fn's extra output for the step that produced these
logits (e.g. a copy head's B/I/O logits, or the token just consumed), and `carry` a per-beam pytree
(leading dim N) that is reordered with the beams.  Masking a logit to -inf forbids that token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp

if TYPE_CHECKING:
    from shared.unilm import UniLM

StepFn = Callable[[jax.Array, Any, jax.Array], tuple[jax.Array, Any, Any]]
Processor = Callable[[jax.Array, Any, Any], tuple[jax.Array, Any]]


class DecodeResult(NamedTuple):
    """tokens int [B, K, max_new] (pad after eos), scores [B, K] (summed log-probs), lengths int [B, K]
    (tokens up to and including eos), finished bool [B, K]; beams sorted best first."""

    tokens: jax.Array
    scores: jax.Array
    lengths: jax.Array
    finished: jax.Array


def _repeat(tree, k):
    return jax.tree.map(lambda x: jnp.repeat(x, k, axis=0) if x.ndim >= 1 else x, tree)


def _gather(tree, flat_index):
    return jax.tree.map(lambda x: x[flat_index] if x.ndim >= 1 else x, tree)


def _rank(scores, lengths, alpha):
    if alpha == 0.0:
        return scores
    return scores / ((5.0 + lengths.astype(jnp.float32)) / 6.0) ** alpha


def beam_search(step_fn: StepFn, first_logits: jax.Array, cache: Any, *, beam_size: int, max_new: int,
                eos_id: int, pad_id: int = 0, length_penalty: float = 0.0, first_aux: Any = None,
                processor: Processor | None = None, processor_carry: Any = None,
                drop_finished: bool = False) -> DecodeResult:
    """Beam search (beam_size = 1 is greedy) over a cached step function; see the module docstring.

    Args:
      step_fn: (token [N], cache, step) -> (logits [N, V], aux, cache), N = B * beam_size.
      first_logits: [B, V] next-token logits after the prefix; cache: the prefix cache, batch B.
      first_aux: aux for the first step (leading dim B) or None; processor_carry: initial carry, batch B.
      drop_finished: False keeps finished non-best beams; True drops them and shrinks the beam (the
        baseline's behaviour; the two agree for beam_size = 1).
    Returns: DecodeResult with beams sorted by rank (best first).
    """
    if beam_size < 1 or max_new < 1:
        raise ValueError(f"beam_size and max_new must be >= 1, got {beam_size}, {max_new}")
    b, v = first_logits.shape
    k, n = beam_size, first_logits.shape[0] * beam_size
    if beam_size > v:
        raise ValueError(f"beam_size={beam_size} exceeds the vocabulary size {v}")
    rows = jnp.arange(b)
    state = dict(
        step=jnp.zeros((), jnp.int32),
        logits=jnp.repeat(first_logits.astype(jnp.float32), k, axis=0),  # [N, V]
        aux=_repeat(first_aux, k), cache=_repeat(cache, k), carry=_repeat(processor_carry, k),
        tokens=jnp.full((b, k, max_new), pad_id, jnp.int32),
        scores=jnp.full((b, k), -jnp.inf).at[:, 0].set(0.0),
        lengths=jnp.zeros((b, k), jnp.int32), finished=jnp.zeros((b, k), bool),
        width=jnp.full((b,), k, jnp.int32))  # open beams per row (drop_finished); the first step fills all k
    stay = jnp.full((v,), -jnp.inf).at[pad_id].set(0.0)  # a finished beam extends with pad at no cost

    def best_done(s):
        best = jnp.argmax(_rank(s["scores"], s["lengths"], length_penalty), axis=-1)
        return jnp.all(s["finished"][rows, best])

    def cond(s):
        return (s["step"] < max_new) & ~best_done(s)

    def body(s):
        logits, carry = s["logits"], s["carry"]
        if processor is not None:
            logits, carry = processor(logits, s["aux"], carry)
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        logp = jnp.where(jnp.isnan(logp), -jnp.inf, logp).reshape(b, k, v)
        logp = jnp.where(s["finished"][..., None], stay[None, None], logp)
        cand = s["scores"][..., None] + logp  # [B, K, V]
        new_len = s["lengths"][..., None] + (~s["finished"])[..., None].astype(jnp.int32)  # [B, K, 1]
        ranked = _rank(cand, jnp.broadcast_to(new_len, cand.shape), length_penalty).reshape(b, k * v)
        _, idx = jax.lax.top_k(ranked, k)  # [B, K]
        parent, token = idx // v, (idx % v).astype(jnp.int32)
        scores = jnp.take_along_axis(cand.reshape(b, k * v), idx, axis=1)
        was_done = jnp.take_along_axis(s["finished"], parent, axis=1)
        lengths = jnp.take_along_axis(s["lengths"], parent, axis=1) + (~was_done).astype(jnp.int32)
        token = jnp.where(was_done, pad_id, token)
        tokens = jnp.take_along_axis(s["tokens"], parent[..., None], axis=1)
        tokens = jax.lax.dynamic_update_slice(tokens, token[..., None], (0, 0, s["step"]))
        finished = was_done | (token == eos_id)
        width = s["width"]
        if drop_finished:
            # top_k sorts by rank, so slot 0 is the best; keep the top `width` candidates, then drop the
            # finished ones other than slot 0 (a finished slot 0 ends the row, which is then frozen)
            slot = jnp.arange(k)[None, :]
            drop = (slot >= width[:, None]) | (finished & (slot > 0))  # [B, K]
            scores, finished = jnp.where(drop, -jnp.inf, scores), finished & ~drop
            width = jnp.sum(~drop & ~finished, axis=1).astype(jnp.int32)
            frozen = s["finished"][:, 0]  # [B] the row's best had ended: keep the row as it was
            def keep(old, new):
                return jnp.where(frozen.reshape(frozen.shape + (1,) * (new.ndim - 1)), old, new)
            parent = keep(jnp.broadcast_to(jnp.arange(k)[None, :], parent.shape), parent)
            token = keep(jnp.full_like(token, pad_id), token)
            tokens, scores, lengths = keep(s["tokens"], tokens), keep(s["scores"], scores), keep(s["lengths"], lengths)
            finished, width = keep(s["finished"], finished), keep(s["width"], width)
        flat = (rows[:, None] * k + parent).reshape(n)
        cache, carry = _gather(s["cache"], flat), _gather(carry, flat)
        logits, aux, cache = step_fn(token.reshape(n), cache, s["step"])
        return dict(step=s["step"] + 1, logits=logits.astype(jnp.float32), aux=aux, cache=cache, carry=carry,
                    tokens=tokens, scores=scores, lengths=lengths, finished=finished, width=width)

    # one body application outside the loop fixes the aux pytree structure for the while loop
    if first_aux is None:
        state["aux"] = jax.eval_shape(lambda s: body(s)["aux"], state)
        state["aux"] = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), state["aux"])
    s = jax.lax.while_loop(cond, body, state)
    order = jnp.argsort(-_rank(s["scores"], s["lengths"], length_penalty), axis=-1)  # [B, K]
    def take(x):
        return jnp.take_along_axis(x, order.reshape(order.shape + (1,) * (x.ndim - 2)), axis=1)
    return DecodeResult(take(s["tokens"]), take(s["scores"]), take(s["lengths"]), take(s["finished"]))


def greedy_search(step_fn: StepFn, first_logits: jax.Array, cache: Any, **kwargs: Any) -> DecodeResult:
    """Greedy decoding: `beam_search` with beam_size = 1 (argmax each step)."""
    return beam_search(step_fn, first_logits, cache, beam_size=1, **kwargs)


# -- UniLM adapters ---------------------------------------------------------------------------------

def unilm_generate(model: UniLM, source: jax.Array, source_len: jax.Array, *, beam_size: int, max_new: int,
                   eos_id: int, target_segment: int = 1, use_cache: bool = True, **kwargs: Any) -> DecodeResult:
    """Seq2seq generation from a `shared.unilm.UniLM`: prefix `[CLS] q [SEP]` (left-aligned, padded).

    Args: source int [B, S]; source_len int [B].  The generated token at step t gets position id
    source_len + t and segment `target_segment`.  `use_cache=False` is the baseline: every step
    recomputes the whole (fixed-length S + max_new) sequence; results are identical.
    aux passed to the processor: {"hidden": [N, H], "token": [N] the token just consumed}.
    """
    b, s = source.shape
    pad = model.config.pad_id
    valid = jnp.arange(s)[None, :] < source_len[:, None]
    source = jnp.where(valid, source, pad)
    segments = jnp.zeros_like(source)
    last = (source_len - 1)[:, None]
    if use_cache:
        cache = model.init_cache(b, s + max_new)
        logits, aux, cache = model.prefill(source, segments, cache, valid=valid)
        first = jnp.take_along_axis(logits, last[..., None], axis=1)[:, 0]
        first_aux = {"hidden": jnp.take_along_axis(aux["hidden"], last[..., None], axis=1)[:, 0],
                     "token": jnp.take_along_axis(source, last, axis=1)[:, 0]}
        cache["source_len"] = source_len

        def step_fn(token, cache, step):
            src_len = cache.pop("source_len")
            logits, aux, cache = model.decode_step(token, cache, segment=target_segment, position=src_len + step)
            cache["source_len"] = src_len
            return logits, {"hidden": aux["hidden"], "token": token}, cache
    else:
        t = s + max_new
        ids = jnp.pad(source, ((0, 0), (0, max_new)), constant_values=pad)
        seg = jnp.zeros((b, t), jnp.int32)
        first_logits, aux = model(source, segments, valid=valid)
        first = jnp.take_along_axis(first_logits, last[..., None], axis=1)[:, 0]
        first_aux = {"hidden": jnp.take_along_axis(aux["hidden"], last[..., None], axis=1)[:, 0],
                     "token": jnp.take_along_axis(source, last, axis=1)[:, 0]}
        cache = {"ids": ids, "seg": seg, "valid": jnp.pad(valid, ((0, 0), (0, max_new))), "source_len": source_len}

        def step_fn(token, c, step):
            pos = c["source_len"] + step  # [N] position of the consumed token
            write = jnp.arange(t)[None, :] == pos[:, None]
            ids = jnp.where(write, token[:, None], c["ids"])
            seg = jnp.where(write, target_segment, c["seg"])
            valid = c["valid"] | write
            logits, aux = model(ids, seg, valid=valid)
            out = jnp.take_along_axis(logits, pos[:, None, None], axis=1)[:, 0]
            hid = jnp.take_along_axis(aux["hidden"], pos[:, None, None], axis=1)[:, 0]
            return out, {"hidden": hid, "token": token}, dict(c, ids=ids, seg=seg, valid=valid)
    return beam_search(step_fn, first, cache, beam_size=beam_size, max_new=max_new, eos_id=eos_id,
                       pad_id=pad, first_aux=first_aux, **kwargs)
