"""Writes tests/fixtures/hf_tiny_bert/: a tiny random HF `BertForMaskedLM` and its outputs on fixed inputs.

Needs torch + transformers, kept out of the main venv:
  python3 -m venv /work/venv-torch && /work/venv-torch/bin/pip install torch==2.13.0 transformers safetensors numpy
  /work/venv-torch/bin/python scripts/make_hf_bert_fixture.py [--out tests/fixtures/hf_tiny_bert]
Output: config.json, model.safetensors (save_pretrained), vocab.txt, and expected.npz with
input_ids / token_type_ids / attention_mask (padded, int32), last_hidden [B, T, H], mlm_logits [B, T, V].
"""

import argparse
import pathlib

import numpy as np
import torch
import transformers

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CHARS = list("0123456789+-*/().%=x") + list("鸡兔同笼有头脚只多少个几问各元米千克小明红买了共是的和")
WORDPIECES = ["##0", "##1", "##2", "##5", "12", "100", "##00", "**", "[unused1]"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/hf_tiny_bert")
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    vocab = SPECIALS + CHARS + WORDPIECES
    assert len(set(vocab)) == len(vocab)
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=64, type_vocab_size=2,
                                  hidden_act="gelu", layer_norm_eps=1e-12, initializer_range=0.2)
    model = transformers.BertForMaskedLM(cfg).eval()
    with torch.no_grad():  # random non-zero biases and LN params so the test sees every parameter
        for name, p in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(out, safe_serialization=True)
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")

    rng = np.random.default_rng(0)
    b, t = 3, 12
    ids = rng.integers(5, len(vocab), size=(b, t)).astype(np.int32)
    ids[:, 0] = 2
    lengths = np.array([12, 9, 5])
    mask = (np.arange(t)[None] < lengths[:, None]).astype(np.int32)
    ids[np.arange(b), lengths - 1] = 3
    ids = np.where(mask == 1, ids, 0).astype(np.int32)
    types = ((np.arange(t)[None] >= lengths[:, None] // 2) & (mask == 1)).astype(np.int32)
    with torch.no_grad():
        o = model(input_ids=torch.tensor(ids, dtype=torch.long), token_type_ids=torch.tensor(types, dtype=torch.long),
                  attention_mask=torch.tensor(mask, dtype=torch.long), output_hidden_states=True)
    np.savez_compressed(out / "expected.npz", input_ids=ids, token_type_ids=types, attention_mask=mask,
                        last_hidden=o.hidden_states[-1].numpy().astype(np.float32),
                        mlm_logits=o.logits.numpy().astype(np.float32))
    print("wrote", sorted(p.name for p in out.iterdir()))


if __name__ == "__main__":
    main()
