"""Tests for the mwp experiments: registry, configs, the evaluation pipeline (oracle / garbage decoders),
the ape210k runner on fixture files, a half-length quick run, and (slow) the quick run's accuracy floor."""

import dataclasses
import json
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

from mwp import configs, synthetic
from mwp.experiments import EXPERIMENTS
from mwp.solver import answer_accuracy, encode, encode_sources, is_correct, prepare_problems
from mwp.tokenizer import CharTokenizer


def test_registry_and_configs():
    assert set(EXPERIMENTS) == {"synthetic_solver", "ape210k"}
    assert EXPERIMENTS["synthetic_solver"].presets["quick"] == configs.SYNTHETIC_QUICK
    with pytest.raises(ValueError, match=r"config\.batch_size"):
        dataclasses.replace(configs.SYNTHETIC_QUICK, batch_size=0)
    with pytest.raises(ValueError, match=r"config\.size"):
        dataclasses.replace(configs.APE210K_FULL, size="huge")
    assert configs.APE210K_FULL.learning_rate == 2e-5 and configs.APE210K_FULL.batch_size == 32
    assert configs.APE210K_LARGE.batch_size == 16


@pytest.fixture(scope="module")
def problems():
    ps = prepare_problems(synthetic.generate_split("test", 40, seed=0), number_slot=True)
    return ps, CharTokenizer.build(p["question"] for p in ps)


def test_encode_layout(problems):
    ps, tok = problems
    arrays = encode(ps, tok, 64, 20)
    ids, seg = arrays["ids"], arrays["segments"]
    assert ids.shape == seg.shape == (40, 87)
    for row, s in zip(ids, seg):
        first_target = int(np.argmax(s))
        assert row[0] == tok.cls_id and row[first_target - 1] == tok.sep_id
        assert tok.decode_expression(row[first_target:]) != ""


def test_oracle_and_garbage_decoders(problems):
    ps, tok = problems
    gold = [tok.encode_expression(p["equation"]) + [tok.sep_id] for p in ps]
    table = np.zeros((len(ps), 24), np.int32)
    for i, g in enumerate(gold):
        table[i, :len(g)] = g
    src, _ = encode_sources(ps, tok, 64)
    lookup = {tuple(s): i for i, s in enumerate(src)}

    def oracle(source, lens):
        return jnp.asarray(np.stack([table[lookup[tuple(np.asarray(s))]] for s in source]))

    acc, preds = answer_accuracy(oracle, ps, tok, 64, batch_size=16)
    assert acc == 1.0 and preds[0] == ps[0]["equation"]
    rng = np.random.default_rng(0)

    def garbage(source, lens):  # random tokens, including [UNK], slots beyond the question, '**' chains
        return jnp.asarray(rng.integers(0, tok.vocab_size, (source.shape[0], 24)), jnp.int32)

    acc, preds = answer_accuracy(garbage, ps, tok, 64, batch_size=16)
    assert 0.0 <= acc <= 0.1 and len(preds) == len(ps)


@pytest.mark.parametrize("pred", ["", "9**9**9**9", "[N9]+1", "__import__('os')", "(" * 10_000, "?", "1/0"])
def test_invalid_predictions_are_wrong_not_errors(pred):
    assert is_correct(pred, {"numbers": ["3"], "value": 3}) is False


HF_TINY = pathlib.Path(__file__).parent / "fixtures" / "hf_tiny_bert"


def _fixture_problems(n, seed):
    """Ape210K-format lines written only with characters of the tiny checkpoint's vocab.txt."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        a, b = (int(x) for x in rng.integers(2, 60, 2))
        if i % 2:
            text, eq, ans = f"小明有{a}元小红有{b}元共有多少元", f"x={a}+{b}", a + b
        else:
            text, eq, ans = f"小明买了{a}个{b}元的共是多少元", f"x={a}*{b}", a * b
        out.append({"id": str(i), "segmented_text": " ".join(text), "original_text": text, "ans": str(ans),
                    "equation": eq})
    return out


def _write_fixture_data(data_dir):
    data_dir.mkdir()
    for split, n in (("train", 16), ("valid", 6), ("test", 6)):
        with open(data_dir / f"{split}.ape.json", "w", encoding="utf-8") as f:
            for r in _fixture_problems(n, seed=len(split)):
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
            f.write("{broken\n")


@pytest.mark.parametrize("simplified", [False, True])
def test_ape210k_build_model_loads_checkpoint(tmp_path, simplified):
    """base size: the UniLM's weights are the checkpoint's (embedding rows sliced by the simplified vocab)."""
    from safetensors.numpy import load_file

    from mwp.ape210k import build_model, load_splits

    _write_fixture_data(tmp_path / "data")
    cfg = dataclasses.replace(configs.APE210K_FULL, data_dir=str(tmp_path / "data"), checkpoint_dir=str(HF_TINY),
                              max_source=40, max_target=16, simplified_vocab=simplified, bf16=False)
    splits, summaries = load_splits(cfg)
    assert summaries["train"]["kept"] == 16 and summaries["train"]["dropped"] == {"malformed": 1}
    model, tok, info = build_model(cfg, splits, tmp_path / "vocab")
    sd = {k.removeprefix("bert."): v for k, v in load_file(str(HF_TINY / "model.safetensors")).items()}
    word = sd["embeddings.word_embeddings.weight"]
    keep = info["kept_token_ids"] if simplified else list(range(word.shape[0]))
    assert (len(keep) < word.shape[0]) == simplified and info["source"] == str(HF_TINY)
    np.testing.assert_array_equal(np.asarray(model.word.embedding[...]), word[keep])
    np.testing.assert_array_equal(np.asarray(model.layers[1].query.kernel[...]),
                                  sd["encoder.layer.1.attention.self.query.weight"].T)
    assert tok.vocab_size == model.config.vocab_size == len(keep)
    ids = tok.encode_question(splits["train"][0]["question"])
    assert tok.unk_id not in ids  # the fixture problems are tokenizable with the checkpoint's vocab
    assert tok.decode_expression(tok.encode_expression("12**2-(3+4)")) == "12**2-(3+4)"
    with pytest.raises(ValueError, match="max_position"):
        build_model(dataclasses.replace(cfg, max_source=60), splits, tmp_path / "vocab2")
    if not simplified:  # size tiny: random init with the checkpoint's full vocabulary
        mt, _, it = build_model(dataclasses.replace(cfg, size="tiny"), splits, tmp_path / "vocab4")
        assert it["source"].startswith("random") and mt.config.vocab_size == 61 and mt.config.hidden == 64
    if simplified:  # bf16 compute: params stay float32 (the checkpoint's values), logits finite
        m16, _, _ = build_model(dataclasses.replace(cfg, bf16=True), splits, tmp_path / "vocab3")
        assert m16.config.dtype == "bfloat16" and m16.word.embedding[...].dtype == np.float32
        ids = jnp.asarray([[tok.cls_id, *ids, tok.sep_id]])
        logits, aux = m16(ids, jnp.zeros_like(ids))
        assert aux["hidden"].dtype == jnp.bfloat16 and bool(jnp.isfinite(logits).all())


def test_ape210k_run_on_fixture_files(tmp_path):
    """run_ape210k end to end: fixture files in the real format + the committed tiny HF checkpoint, 1 epoch."""
    from mwp.ape210k import run_ape210k
    from shared.experiment import RunContext
    from shared.report import Report

    _write_fixture_data(tmp_path / "data")
    cfg = dataclasses.replace(configs.APE210K_FULL, data_dir=str(tmp_path / "data"), checkpoint_dir=str(HF_TINY),
                              epochs=1, batch_size=8, max_source=40, max_target=16, eval_batch_size=8, beams=(1, 2),
                              log_every=1, checkpoint_every=0, bf16=False)
    out = tmp_path / "out"
    ctx = RunContext(out_dir=out, report=Report("mwp.ape210k", out))
    metrics = run_ape210k(cfg, ctx)
    assert {"valid_beam1", "test_beam1", "valid_beam2", "test_beam2", "best_epoch", "init", "history", "data",
            "wall_time_s", "steps_per_epoch"} <= set(metrics)
    assert metrics["init"]["source"] == str(HF_TINY) and metrics["init"]["missing"] == []
    assert metrics["init"]["vocab_size"] < 61  # simplified vocabulary (the default)
    assert metrics["data"]["train"]["kept"] == 16 and metrics["steps_per_epoch"] == 2
    assert metrics["best_epoch"] == 1 and len(metrics["history"]) == 1
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("valid_beam1", "test_beam2"))
    assert np.isfinite(metrics["history"][0]["loss"])
    md = ctx.report.markdown()
    assert "base beam 2" in md and "valid (post)" in md and str(HF_TINY) in md


def test_half_length_run_solves_seen_phrasings(tmp_path):
    """The quick preset at half the steps (120), 1,500 training and 100 test problems, beam 1: fails if training,
    the number slots or decoding break, i.e. if problems in seen phrasings with held-out number ranges are not
    solved (measured 0.895 on 1 device, seed 0; the full quick run reaches 0.985)."""
    from mwp.solver import run_synthetic
    from shared.experiment import RunContext
    from shared.report import Report

    config = dataclasses.replace(configs.SYNTHETIC_QUICK, num_steps=120, train_size=1500, valid_size=20,
                                 test_size=100, beams=(1,))
    metrics = run_synthetic(config, RunContext(out_dir=tmp_path, report=Report("q", tmp_path)))
    assert metrics["test_beam1_seen_phrasing"] >= 0.8


@pytest.mark.slow
def test_quick_run_reaches_floor(tmp_path):
    """The quick preset with seed 0: the floors under the README's measured 0.493 / 0.985 (mwp/README.md)."""
    from mwp.solver import run_synthetic
    from shared.experiment import RunContext
    from shared.report import Report

    metrics = run_synthetic(configs.SYNTHETIC_QUICK, RunContext(out_dir=tmp_path, report=Report("q", tmp_path)))
    assert metrics["test_beam1_seen_phrasing"] >= QUICK_SEEN_FLOOR
    assert metrics["test_beam1"] >= QUICK_TEST_FLOOR


QUICK_SEEN_FLOOR = 0.9
QUICK_TEST_FLOOR = 0.45  # measured 0.493 (seen phrasing 0.985, held-out phrasing 0.091), seed 0, 240 steps
