"""BERT encoder with the UniLM seq2seq mask, an MLM head tied to the embeddings, and a KV cache.

Architecture (Devlin et al. 2019, arXiv 1810.04805; matches HF `BertForMaskedLM`):
  x_0 = LN(E_word[ids] + E_pos[pos] + E_type[segments])              (LN eps 1e-12)
  a   = LN(x + W_o MHA(x))   ;   x' = LN(a + W_2 gelu_erf(W_1 a))     (post-LN blocks)
  logits = LN(gelu_erf(W_t x_L)) E_word^T + b                          (MLM head, tied decoder)

UniLM seq2seq mask (Dong et al. 2019, arXiv 1905.03197, Sec. 2.2): query i may attend key j iff j is
valid (not padding) and (segment[j] == 0 or j <= i): source tokens see the whole source, target tokens
see the source and the earlier target tokens.

Optional NEZHA functional relative positions (Wei et al. 2019, arXiv 1909.00204, Eq. 1-3): no absolute
position embedding; a fixed sinusoidal table r over clipped distances clip(j - i, -M, M) is added to the
keys and values: e_ij = q_i (k_j + r_ij)^T / sqrt(d), z_i = sum_j a_ij (v_j + r_ij).  Lengths are then
limited only by memory (spaces uses 1,024).

Incremental decoding: `prefill` runs the prefix once and writes every layer's keys/values into a
fixed-shape cache ([B, L_max, heads, head_dim] per layer, `lax.dynamic_update_slice`); `decode_step`
then runs one token per step at cache slot `index`.  Positions are stored per slot, so a padded batch
(sources of different lengths) decodes exactly as full recomputation does.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx


@dataclasses.dataclass(frozen=True)
class UniLMConfig:
    """BERT dimensions.  `dtype` is the compute dtype (e.g. "bfloat16"); params stay `param_dtype`."""

    vocab_size: int = 21128
    hidden: int = 768
    layers: int = 12
    heads: int = 12
    intermediate: int = 3072
    max_position: int = 512
    type_vocab: int = 2
    dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    dtype: str = "float32"
    param_dtype: str = "float32"
    relative_position: bool = False
    max_relative: int = 64
    pad_id: int = 0
    seed: int = 0

    def __post_init__(self):
        if self.hidden % self.heads:
            raise ValueError(f"UniLMConfig.hidden={self.hidden} is not divisible by heads={self.heads}")
        for name in ("vocab_size", "hidden", "layers", "heads", "intermediate", "max_position"):
            if getattr(self, name) <= 0:
                raise ValueError(f"UniLMConfig.{name} must be positive, got {getattr(self, name)}")


BASE = UniLMConfig()
LARGE = dataclasses.replace(BASE, hidden=1024, layers=24, heads=16, intermediate=4096)
TINY = dataclasses.replace(BASE, vocab_size=128, hidden=64, layers=2, heads=4, intermediate=128,
                           max_position=256, dropout=0.0)
CONFIGS = {"tiny": TINY, "base": BASE, "large": LARGE}


def unilm_mask(segment_ids: jax.Array, valid: jax.Array) -> jax.Array:
    """bool [B, T, T]: allowed[b, i, j] = valid[b, j] & (segment[b, j] == 0 | j <= i).

    Args: segment_ids int [B, T] (0 source, 1 target); valid bool [B, T] (False at padding).
    """
    t = segment_ids.shape[1]
    causal = jnp.arange(t)[:, None] >= jnp.arange(t)[None, :]  # [T, T]
    return valid[:, None, :] & ((segment_ids == 0)[:, None, :] | causal[None])


def padding_mask(valid: jax.Array) -> jax.Array:
    """bool [B, 1, T]: bidirectional attention over the valid keys (plain BERT, as HF)."""
    return valid[:, None, :]


def relative_table(max_relative: int, dim: int) -> jax.Array:
    """float32 [2M+1, d] sinusoids of the distances -M..M (NEZHA Eq. 3): sin at even, cos at odd dims."""
    n = jnp.arange(-max_relative, max_relative + 1, dtype=jnp.float32)[:, None]  # [2M+1, 1]
    i = jnp.arange(dim // 2, dtype=jnp.float32)[None, :]
    angle = n / jnp.power(10000.0, 2.0 * i / dim)  # [2M+1, d/2]
    return jnp.stack([jnp.sin(angle), jnp.cos(angle)], axis=-1).reshape(2 * max_relative + 1, dim)


def _dropout(x, rate, key):
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def _fold(key, i):
    return None if key is None else jax.random.fold_in(key, i)


class Layer(nnx.Module):
    """One post-LN BERT block with optional NEZHA relative positions and a KV cache."""

    def __init__(self, c: UniLMConfig, rngs: nnx.Rngs):
        kw: dict[str, Any] = dict(dtype=jnp.dtype(c.dtype), param_dtype=jnp.dtype(c.param_dtype), rngs=rngs,
                                  kernel_init=nnx.initializers.truncated_normal(0.02))
        ln: dict[str, Any] = dict(epsilon=c.layer_norm_eps, dtype=jnp.dtype(c.dtype),
                                  param_dtype=jnp.dtype(c.param_dtype), rngs=rngs)
        self.c = c
        self.query = nnx.Linear(c.hidden, c.hidden, **kw)
        self.key = nnx.Linear(c.hidden, c.hidden, **kw)
        self.value = nnx.Linear(c.hidden, c.hidden, **kw)
        self.attn_out = nnx.Linear(c.hidden, c.hidden, **kw)
        self.attn_ln = nnx.LayerNorm(c.hidden, **ln)
        self.inter = nnx.Linear(c.hidden, c.intermediate, **kw)
        self.out = nnx.Linear(c.intermediate, c.hidden, **kw)
        self.out_ln = nnx.LayerNorm(c.hidden, **ln)

    def __call__(self, x: jax.Array, mask: jax.Array, pos_q: jax.Array, pos_k: jax.Array,
                 cache: dict[str, Any] | None = None, index: int | jax.Array | None = None,
                 key: jax.Array | None = None) -> tuple[jax.Array, dict[str, Any] | None]:
        """x [B, Tq, H]; mask bool [B, Tq|1, Tk]; pos_q int [B, Tq]; pos_k int [B, Tk].

        With `cache` ({"k", "v"}: [B, L_max, heads, head_dim]) the new keys/values are written at slot
        `index` and attention runs over the whole cache (Tk = L_max).  Returns (y [B, Tq, H], cache).
        """
        c = self.c
        b, tq, _ = x.shape
        d = c.hidden // c.heads
        q = self.query(x).reshape(b, tq, c.heads, d)
        k = self.key(x).reshape(b, tq, c.heads, d)
        v = self.value(x).reshape(b, tq, c.heads, d)
        if cache is not None:
            assert index is not None, "a cache needs the slot index"
            k = jax.lax.dynamic_update_slice(cache["k"], k.astype(cache["k"].dtype), (0, index, 0, 0))
            v = jax.lax.dynamic_update_slice(cache["v"], v.astype(cache["v"].dtype), (0, index, 0, 0))
            cache = {"k": k, "v": v}
            k, v = k.astype(q.dtype), v.astype(q.dtype)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k)  # [B, h, Tq, Tk]
        if c.relative_position:
            rel = jnp.clip(pos_k[:, None, :] - pos_q[:, :, None], -c.max_relative, c.max_relative)
            r = relative_table(c.max_relative, d).astype(q.dtype)[rel + c.max_relative]  # [B, Tq, Tk, d]
            scores = scores + jnp.einsum("bqhd,bqkd->bhqk", q, r)
        scores = scores.astype(jnp.float32) / math.sqrt(d)
        scores = jnp.where(mask[:, None], scores, jnp.finfo(jnp.float32).min)
        p = jax.nn.softmax(scores, axis=-1)
        p = _dropout(p, c.dropout, _fold(key, 0)).astype(v.dtype)
        z = jnp.einsum("bhqk,bkhd->bqhd", p, v)  # [B, Tq, h, d]
        if c.relative_position:
            z = z + jnp.einsum("bhqk,bqkd->bqhd", p, r)
        z = self.attn_out(z.reshape(b, tq, c.hidden))
        a = self.attn_ln(x + _dropout(z, c.dropout, _fold(key, 1)))
        h = self.out(jax.nn.gelu(self.inter(a), approximate=False))
        return self.out_ln(a + _dropout(h, c.dropout, _fold(key, 2))), cache


class UniLM(nnx.Module):
    """BERT + MLM head.  `model(ids, segments)` -> (logits float32 [B, T, V], {"hidden": [B, T, H]}).

    The mask defaults to the UniLM seq2seq mask with padding (ids == pad_id) masked; pass
    `mask=padding_mask(valid)` for plain bidirectional BERT.  `key` enables dropout (training).
    """

    def __init__(self, c: UniLMConfig, *, rngs: nnx.Rngs):
        self.config = c
        dt, pdt = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
        emb: dict[str, Any] = dict(dtype=dt, param_dtype=pdt, rngs=rngs,
                                   embedding_init=nnx.initializers.truncated_normal(0.02))
        self.word = nnx.Embed(c.vocab_size, c.hidden, **emb)
        self.position = None if c.relative_position else nnx.Embed(c.max_position, c.hidden, **emb)
        self.token_type = nnx.Embed(c.type_vocab, c.hidden, **emb)
        self.emb_ln = nnx.LayerNorm(c.hidden, epsilon=c.layer_norm_eps, dtype=dt, param_dtype=pdt, rngs=rngs)
        self.layers = nnx.List([Layer(c, rngs) for _ in range(c.layers)])
        self.head = nnx.Linear(c.hidden, c.hidden, dtype=dt, param_dtype=pdt, rngs=rngs,
                               kernel_init=nnx.initializers.truncated_normal(0.02))
        self.head_ln = nnx.LayerNorm(c.hidden, epsilon=c.layer_norm_eps, dtype=dt, param_dtype=pdt, rngs=rngs)
        self.mlm_bias = nnx.Param(jnp.zeros((c.vocab_size,), pdt))

    # -- pieces -------------------------------------------------------------------------------------
    def embed(self, ids: jax.Array, segments: jax.Array, positions: jax.Array,
              key: jax.Array | None = None) -> jax.Array:
        """[B, T] ids, segments, positions -> x_0 [B, T, H]."""
        x = self.word(ids) + self.token_type(segments)
        if self.position is not None:
            x = x + self.position(positions)
        return _dropout(self.emb_ln(x), self.config.dropout, key)

    def mlm_logits(self, hidden: jax.Array) -> jax.Array:
        """hidden [..., H] -> float32 logits [..., V] (transform, LN, tied decoder + bias)."""
        h = self.head_ln(jax.nn.gelu(self.head(hidden), approximate=False))
        logits = self.word.attend(h).astype(jnp.float32)
        return logits + self.mlm_bias[...].astype(jnp.float32).reshape((1,) * (logits.ndim - 1) + (-1,))

    def encode(self, ids: jax.Array, segments: jax.Array, *, mask: jax.Array | None = None,
               positions: jax.Array | None = None, valid: jax.Array | None = None,
               key: jax.Array | None = None) -> jax.Array:
        """Last hidden states [B, T, H].  positions default to arange(T); valid to ids != pad_id."""
        b, t = ids.shape
        if t > self.config.max_position and not self.config.relative_position:
            raise ValueError(f"ids has length {t} > UniLMConfig.max_position={self.config.max_position}")
        valid = (ids != self.config.pad_id) if valid is None else valid
        positions = jnp.broadcast_to(jnp.arange(t)[None], (b, t)) if positions is None else positions
        mask = unilm_mask(segments, valid) if mask is None else mask
        x = self.embed(ids, segments, positions, _fold(key, 10_000))
        for i, layer in enumerate(self.layers):
            x, _ = layer(x, mask, positions, positions, key=_fold(key, i))
        return x

    def __call__(self, ids: jax.Array, segments: jax.Array, *, mask: jax.Array | None = None,
                 positions: jax.Array | None = None, valid: jax.Array | None = None,
                 key: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
        h = self.encode(ids, segments, mask=mask, positions=positions, valid=valid, key=key)
        return self.mlm_logits(h), {"hidden": h}

    # -- KV cache -----------------------------------------------------------------------------------
    def init_cache(self, batch: int, max_len: int, dtype: Any = None) -> dict:
        """Empty cache: per layer {"k", "v"} [B, L_max, heads, head_dim]; slot valid/positions [B, L_max]."""
        c = self.config
        dtype = jnp.dtype(c.dtype) if dtype is None else dtype
        shape = (batch, max_len, c.heads, c.hidden // c.heads)
        return {"layers": [{"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)} for _ in range(c.layers)],
                "valid": jnp.zeros((batch, max_len), bool), "positions": jnp.zeros((batch, max_len), jnp.int32),
                "index": jnp.zeros((), jnp.int32)}

    def _run_cached(self, ids, segments, positions, valid, cache, mask):
        index = cache["index"]
        x = self.embed(ids, segments, positions)
        t = ids.shape[1]
        slot_valid = jax.lax.dynamic_update_slice(cache["valid"], valid, (0, index))
        slot_pos = jax.lax.dynamic_update_slice(cache["positions"], positions.astype(jnp.int32), (0, index))
        layers = []
        for layer, lc in zip(self.layers, cache["layers"]):
            x, lc = layer(x, mask(slot_valid), positions, slot_pos, cache=lc, index=index)
            layers.append(lc)
        new = {"layers": layers, "valid": slot_valid, "positions": slot_pos, "index": index + t}
        return x, new

    def prefill(self, ids: jax.Array, segments: jax.Array, cache: dict[str, Any], *, valid: jax.Array | None = None,
                positions: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array], dict[str, Any]]:
        """Runs the prefix [B, S] once into an empty cache (slots 0..S-1).

        Returns (logits [B, S, V], aux {"hidden"}, cache with index = S).  The UniLM mask is applied
        within the prefix; slots >= S are invalid until written.
        """
        b, s = ids.shape
        valid = (ids != self.config.pad_id) if valid is None else valid
        positions = jnp.broadcast_to(jnp.arange(s)[None], (b, s)) if positions is None else positions
        lmax = cache["valid"].shape[1]
        base = unilm_mask(segments, valid)  # [B, S, S]

        def mask(_slot_valid):
            return jnp.pad(base, ((0, 0), (0, 0), (0, lmax - s)))  # [B, S, L_max]

        h, cache = self._run_cached(ids, segments, positions, valid, cache, mask)
        return self.mlm_logits(h), {"hidden": h}, cache

    def decode_step(self, token: jax.Array, cache: dict[str, Any], *, segment: int | jax.Array = 1,
                    position: jax.Array) -> tuple[jax.Array, dict[str, jax.Array], dict[str, Any]]:
        """One token per example at slot cache["index"].

        Args: token int [B]; position int [B] (its position id, e.g. source_len + step);
        segment int scalar or [B].  The token attends every valid slot written so far (itself included).
        Returns (logits [B, V], aux {"hidden": [B, H]}, cache with index + 1).
        """
        b = token.shape[0]
        seg = jnp.broadcast_to(jnp.asarray(segment, jnp.int32), (b,))[:, None]
        h, cache = self._run_cached(token[:, None], seg, position[:, None].astype(jnp.int32),
                                    jnp.ones((b, 1), bool), cache, lambda sv: sv[:, None, :])
        return self.mlm_logits(h[:, 0]), {"hidden": h[:, 0]}, cache


def create(name_or_config: str | UniLMConfig = "tiny", *, seed: int | None = None, **overrides: Any) -> UniLM:
    """Builds a UniLM from a preset name ("tiny", "base", "large") or a config, with field overrides."""
    if isinstance(name_or_config, str):
        if name_or_config not in CONFIGS:
            raise ValueError(f"unknown config name {name_or_config!r}; choose from {sorted(CONFIGS)}")
        name_or_config = CONFIGS[name_or_config]
    c = dataclasses.replace(name_or_config, **overrides)
    return UniLM(c, rngs=nnx.Rngs(c.seed if seed is None else seed))


def seq2seq_targets(ids: jax.Array, segments: jax.Array, valid: jax.Array | None = None,
                    pad_id: int = 0) -> tuple[jax.Array, jax.Array]:
    """The next-token targets of a UniLM seq2seq batch: position t predicts token t+1 where
    segments[t+1] == 1 and it is valid.

    Args: ids, segments int [B, T]; valid bool [B, T] (default ids != pad_id).
    Returns (labels int [B, T-1] = ids[:, 1:], w float32 [B, T-1] = 1 on target positions else 0).
    """
    valid = (ids != pad_id) if valid is None else valid
    return ids[:, 1:], ((segments[:, 1:] == 1) & valid[:, 1:]).astype(jnp.float32)


def seq2seq_nll(logits: jax.Array, ids: jax.Array, segments: jax.Array, valid: jax.Array | None = None,
                pad_id: int = 0) -> tuple[jax.Array, jax.Array]:
    """Per-example summed target-token NLL and target-token count (targets from `seq2seq_targets`):
      nll_b = -sum_t w_bt log softmax(logits_bt)[ids_b,t+1],  n_b = sum_t w_bt.
    Args: logits [B, T, V]; ids, segments int [B, T]; valid bool [B, T] (default ids != pad_id).
    Returns (nll [B], count [B]).
    """
    labels, w = seq2seq_targets(ids, segments, valid, pad_id)
    logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32))
    nll = -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]  # [B, T-1]
    return jnp.where(w > 0, nll, 0.0).sum(-1), w.sum(-1)


def seq2seq_loss(model: UniLM, batch: dict, rng: jax.Array) -> tuple[jax.Array, dict]:
    """`fn(model, batch, rng)` for `shared.train.nnx_loss`: mean CE over all target tokens of the batch.

    batch: "ids", "segments" int [B, T]; optional "weight" float [B] (0 for padded examples).
    The reduction (sum of per-example sums / number of target tokens, as the baseline) is here.
    """
    key = rng if model.config.dropout > 0 else None
    logits, _ = model(batch["ids"], batch["segments"], key=key)
    nll, n = seq2seq_nll(logits, batch["ids"], batch["segments"], pad_id=model.config.pad_id)
    if "weight" in batch:
        nll, n = nll * batch["weight"], n * batch["weight"]
    denom = jnp.maximum(n.sum(), 1.0)
    return nll.sum() / denom, {"target_tokens": n.sum()}
