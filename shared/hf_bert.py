"""Loads an HF-format BERT directory (config.json, vocab.txt, model.safetensors) into `shared.unilm.UniLM`.

Name map (HF `BertModel` / `BertForMaskedLM`, optional "bert." prefix, old "gamma"/"beta" LN names):
  embeddings.{word,position,token_type}_embeddings.weight     -> word / position / token_type .embedding
  encoder.layer.i.attention.self.{query,key,value}            -> layers[i].{query,key,value}
  encoder.layer.i.attention.output.{dense,LayerNorm}          -> layers[i].{attn_out,attn_ln}
  encoder.layer.i.{intermediate.dense, output.dense, output.LayerNorm} -> layers[i].{inter,out,out_ln}
  cls.predictions.transform.{dense,LayerNorm}, cls.predictions.bias -> head, head_ln, mlm_bias
HF Linear weights are [out, in]; NNX kernels are [in, out] (transposed here).  The MLM decoder is tied to
the word embeddings (as HF's default); a missing MLM head keeps the model's random init (reported).

"Simplified vocabulary" (the baseline's `keep_tokens`): keep the specials and every token the tokenizer
can produce; drop tokens whose text (without "##") has characters outside `allowed_chars` (if given),
duplicates after lower-casing, and `[unused*]`.  The word embedding rows and the MLM bias are sliced.
Pretrained weights usually ship as pytorch_model.bin; convert with scripts/convert_pytorch_bin_to_safetensors.py.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Iterable

import numpy as np
from flax import nnx

from shared import unilm

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def read_vocab(path: str | pathlib.Path) -> list[str]:
    """vocab.txt lines (one token per line, id = line number)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"vocab file not found: {path}")
    tokens = path.read_text(encoding="utf-8").split("\n")
    if tokens and tokens[-1] == "":
        tokens = tokens[:-1]
    return [t.strip() for t in tokens]


def config_from_hf(path: str | pathlib.Path, **overrides) -> unilm.UniLMConfig:
    """UniLMConfig from an HF BERT config.json (hidden_act must be exact "gelu")."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"config file not found: {path}")
    hf = json.loads(path.read_text(encoding="utf-8"))
    if hf.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"{path}: hidden_act={hf['hidden_act']!r} not supported (only exact 'gelu')")
    c = unilm.UniLMConfig(vocab_size=hf["vocab_size"], hidden=hf["hidden_size"], layers=hf["num_hidden_layers"],
                          heads=hf["num_attention_heads"], intermediate=hf["intermediate_size"],
                          max_position=hf["max_position_embeddings"], type_vocab=hf.get("type_vocab_size", 2),
                          layer_norm_eps=hf.get("layer_norm_eps", 1e-12), pad_id=hf.get("pad_token_id") or 0,
                          dropout=hf.get("hidden_dropout_prob", 0.1))
    return dataclasses.replace(c, **overrides)


def simplified_vocab(vocab: list[str], allowed_chars: Iterable[str] | None = None,
                     startswith: Iterable[str] = SPECIAL_TOKENS) -> tuple[list[str], list[int]]:
    """(new vocab, kept original ids).  Specials first (in `startswith` order), then kept tokens in order.

    A token is dropped if it is `[unused*]`/other bracketed non-special, if its text (without a leading
    "##") contains a character not in `allowed_chars` (when given), or if it duplicates a kept token.
    """
    allowed = None if allowed_chars is None else set(allowed_chars)
    index = {t: i for i, t in enumerate(vocab)}
    keep, seen = [], set()
    for s in startswith:
        if s in index:
            keep.append(index[s])
            seen.add(s)
    for i, t in enumerate(vocab):
        if t in seen or not t or (t.startswith("[") and t.endswith("]")):
            continue
        body = t[2:] if t.startswith("##") and len(t) > 2 else t
        if allowed is not None and any(ch not in allowed for ch in body):
            continue
        seen.add(t)
        keep.append(i)
    return [vocab[i] for i in keep], keep


def _linear(sd, name):
    return {"kernel": sd[name + ".weight"].T, "bias": sd[name + ".bias"]}


def _ln(sd, name):
    w = sd.get(name + ".weight", sd.get(name + ".gamma"))
    b = sd.get(name + ".bias", sd.get(name + ".beta"))
    return {"scale": w, "bias": b}


def _set(module, values):
    for k, v in values.items():
        var = getattr(module, k)
        if tuple(var.shape) != tuple(v.shape):
            raise ValueError(f"shape mismatch for {type(module).__name__}.{k}: model {var.shape}, checkpoint {v.shape}")
        var.value = np.asarray(v, dtype=var.value.dtype)


def load_hf_bert(directory: str | pathlib.Path, *, keep_tokens: list[int] | None = None,
                 **config_overrides) -> tuple[unilm.UniLM, dict]:
    """Builds a UniLM from an HF BERT directory.

    Args:
      directory: holds config.json, model.safetensors (vocab.txt is read by the caller / tokenizer).
      keep_tokens: original ids to keep (e.g. from `simplified_vocab`); slices embeddings and MLM bias.
      config_overrides: UniLMConfig fields (e.g. dtype="bfloat16", dropout=0.1).
    Returns (model, info) with info["missing"] listing groups left at random init.
    """
    from safetensors.numpy import load_file

    d = pathlib.Path(directory)
    st = d / "model.safetensors"
    if not st.is_file():
        hint = " (convert pytorch_model.bin with scripts/convert_pytorch_bin_to_safetensors.py)" \
            if (d / "pytorch_model.bin").is_file() else ""
        raise ValueError(f"{st} not found{hint}")
    raw = load_file(str(st))
    sd = {(k[5:] if k.startswith("bert.") else k): v for k, v in raw.items()}
    c = config_from_hf(d / "config.json", **config_overrides)
    word = sd["embeddings.word_embeddings.weight"]
    bias = sd.get("cls.predictions.bias", sd.get("cls.predictions.decoder.bias"))
    if keep_tokens is not None:
        keep = np.asarray(keep_tokens)
        if keep.min() < 0 or keep.max() >= word.shape[0]:
            raise ValueError(f"keep_tokens ids must lie in [0, {word.shape[0]})")
        word = word[keep]
        bias = None if bias is None else bias[keep]
    c = dataclasses.replace(c, vocab_size=word.shape[0])
    model = unilm.UniLM(c, rngs=nnx.Rngs(c.seed))
    _set(model.word, {"embedding": word})
    if model.position is not None:
        _set(model.position, {"embedding": sd["embeddings.position_embeddings.weight"]})
    _set(model.token_type, {"embedding": sd["embeddings.token_type_embeddings.weight"]})
    _set(model.emb_ln, _ln(sd, "embeddings.LayerNorm"))
    for i, layer in enumerate(model.layers):
        p = f"encoder.layer.{i}."
        _set(layer.query, _linear(sd, p + "attention.self.query"))
        _set(layer.key, _linear(sd, p + "attention.self.key"))
        _set(layer.value, _linear(sd, p + "attention.self.value"))
        _set(layer.attn_out, _linear(sd, p + "attention.output.dense"))
        _set(layer.attn_ln, _ln(sd, p + "attention.output.LayerNorm"))
        _set(layer.inter, _linear(sd, p + "intermediate.dense"))
        _set(layer.out, _linear(sd, p + "output.dense"))
        _set(layer.out_ln, _ln(sd, p + "output.LayerNorm"))
    missing = []
    if "cls.predictions.transform.dense.weight" in sd:
        _set(model.head, _linear(sd, "cls.predictions.transform.dense"))
        _set(model.head_ln, _ln(sd, "cls.predictions.transform.LayerNorm"))
    else:
        missing.append("cls.predictions.transform")
    if bias is not None:
        model.mlm_bias.value = np.asarray(bias, dtype=model.mlm_bias.value.dtype)  # type: ignore[assignment]  # host copy
    else:
        missing.append("cls.predictions.bias")
    return model, {"config": c, "missing": missing}


def load_hf_bert_with_vocab(directory: str | pathlib.Path, *, simplify: bool = False,
                            allowed_chars: Iterable[str] | None = None,
                            **config_overrides) -> tuple[unilm.UniLM, list[str]]:
    """`load_hf_bert` plus vocab.txt; with `simplify` the vocabulary and embeddings are cut to
    `simplified_vocab(vocab, allowed_chars)`.  Returns (model, vocab list whose index = token id)."""
    vocab = read_vocab(pathlib.Path(directory) / "vocab.txt")
    keep = None
    if simplify:
        vocab, keep = simplified_vocab(vocab, allowed_chars)
    model, _ = load_hf_bert(directory, keep_tokens=keep, **config_overrides)
    return model, vocab
