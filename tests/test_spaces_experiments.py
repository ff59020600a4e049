"""spaces experiments: the whole pipeline on CAIL2020-format files with a local HF checkpoint (tiny),
the full-size generator by eval_shape, and the quick preset (slow)."""

import dataclasses
import json
import shutil

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from shared import unilm
from shared.experiment import RunContext
from shared.report import Report
from spaces.configs import FULL, QUICK
from spaces.data import write_cail2020
from spaces.experiments import EXPERIMENTS
from spaces.synthetic import synthetic_documents

FIXTURE = "tests/fixtures/hf_tiny_bert"


def test_registry():
    assert set(EXPERIMENTS) == {"synthetic_pipeline", "cail2020"}
    assert EXPERIMENTS["cail2020"].presets["full"].folds == 15
    with pytest.raises(ValueError, match="variants"):
        dataclasses.replace(QUICK, variants=("sparse-copy", "softmax"))


def test_pipeline_on_cail_files_with_a_checkpoint(tmp_path):
    data = tmp_path / "cail"
    data.mkdir()
    write_cail2020(data / "train.jsonl", synthetic_documents(14, seed=2, summary_style="short"))
    config = dataclasses.replace(
        QUICK, data_dir=str(data), checkpoint_dir=FIXTURE, n_train=10, n_test=4, folds=2, clause_len=8,
        extractor_steps=3, extractor_batch=4, extractor_dim=16, relative_position=True, word_vocab=True,
        max_source=40, max_target=30, generator_steps=4, generator_batch=8, beam_size=2, decode_batch=4,
        variants=("sparse-copy", "dense-nocopy"), checkpoint_every=2, examples=2)
    ctx = RunContext(out_dir=tmp_path / "run", report=Report("spaces.cail2020", tmp_path / "run"))
    metrics = EXPERIMENTS["cail2020"].run(config, ctx)
    names = [r[0] for r in metrics["rows"]]
    assert names[:2] == ["oracle extraction", "extract only"] and len(names) == 5
    assert all(0.0 <= v <= 1.0 for r in metrics["rows"] for v in r[1:])
    assert metrics["vocab_size"] > 61  # jieba words added to the checkpoint's 61 tokens
    ctx.report.write(metrics, config)
    json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (tmp_path / "run" / "checkpoints" / "sparse-copy").is_dir()


def test_full_generator_shapes():
    from spaces.generator import CopyGenerator

    def build():
        lm = unilm.UniLM(dataclasses.replace(unilm.BASE, relative_position=True, max_position=FULL.max_source
                                             + FULL.max_target + 3), rngs=nnx.Rngs(0))
        return CopyGenerator(lm, rngs=nnx.Rngs(1))

    model = nnx.eval_shape(build)
    t = FULL.max_source + FULL.max_target + 3
    assert t == 1024
    ids = jnp.zeros((1, t), jnp.int32)
    logits, copy = jax.eval_shape(lambda m: m(ids, ids), model)
    assert logits.shape == (1, t, unilm.BASE.vocab_size) and copy.shape == (1, t, 3)


def test_quick_preset_labels_and_extractor(tmp_path):
    """The quick preset without its generators (labelling, the 4-fold extractor, oracle and extract-only scores on
    the 40 test documents): measured oracle 0.812, extract only 0.752, clause F1 0.723, the README's numbers.
    Fails if the labelling, the SPACES scorer or the extractor's training or selection break."""
    ctx = RunContext(out_dir=tmp_path, report=Report("spaces.synthetic_pipeline", tmp_path))
    metrics = EXPERIMENTS["synthetic_pipeline"].run(dataclasses.replace(QUICK, variants=()), ctx)
    score = {r[0]: r[4] for r in metrics["rows"]}
    assert set(score) == {"oracle extraction", "extract only"}
    assert score["oracle extraction"] == pytest.approx(0.812, abs=0.001)  # no training: the labels alone
    assert score["oracle extraction"] > score["extract only"] > 0.7
    assert metrics["extractor_clause_f1"] > 0.7


@pytest.mark.slow
def test_quick_preset(tmp_path):
    ctx = RunContext(out_dir=tmp_path, report=Report("spaces.synthetic_pipeline", tmp_path))
    metrics = EXPERIMENTS["synthetic_pipeline"].run(QUICK, ctx)
    score = {r[0]: r[4] for r in metrics["rows"]}
    assert score["oracle extraction"] > score["extract only"] > 0.6
    # measured 0.723 (40 test documents, threshold 0.2) with SPACES' extractor (LayerNorm in the gated
    # convolutions, no bias on the first dense layer); 0.774 before
    assert metrics["extractor_clause_f1"] > 0.7
    assert metrics["scorer"].startswith("the SPACES scorer")
    copy = score["extract + generate: sparse softmax, copy decoding"]
    assert copy > score["extract + generate: sparse softmax, no copy constraint"] + 0.1
    # the README's claim: with copy decoding the dense-softmax pipeline beats extraction alone (measured 0.790 vs
    # 0.752, seed 0); fails if generation adds nothing over the extracted clauses it rewrites
    dense = score["extract + generate: dense softmax, copy decoding"]
    assert dense > score["extract only"] + 0.02
    assert dense > score["extract + generate: dense softmax, no copy constraint"] + 0.1


@pytest.mark.slow
def test_generator_resume_gives_the_same_numbers(tmp_path):
    config = dataclasses.replace(
        QUICK, n_train=10, n_test=4, folds=2, clause_len=8, extractor_steps=3, extractor_batch=4, extractor_dim=16,
        max_source=40, max_target=30, generator_steps=6, generator_batch=8, beam_size=2, decode_batch=4,
        variants=("dense-copy",), checkpoint_every=3, examples=1)
    first = EXPERIMENTS["synthetic_pipeline"].run(config, RunContext(out_dir=tmp_path, report=Report("a", tmp_path)))
    # as if interrupted between steps 3 and 6: drop the last checkpoint, resume from step 3
    shutil.rmtree(tmp_path / "checkpoints" / "dense-copy" / "6")
    ctx = RunContext(out_dir=tmp_path, report=Report("b", tmp_path), resume=True)
    resumed = EXPERIMENTS["synthetic_pipeline"].run(config, ctx)
    assert resumed["rows"] == first["rows"]


def test_generator_batch_must_split_over_the_devices(devices):
    from spaces.stages.generate import train_generator

    with pytest.raises(ValueError,
                       match=r"config\.generator_batch=12 is the global batch and must divide by .* the 8 device"):
        train_generator(dataclasses.replace(QUICK, generator_batch=12), None, {}, sparse_k=0, copy_weight=0.0,
                        name="g")
