"""`shared.trainer`: exact resume at any step, SIGTERM, best checkpoints, data indexed by step."""

import signal

import chex
import jax
import numpy as np
import optax
import pytest
from flax import nnx

from shared import data, train, workarounds
from shared.classification import classification_sums
from shared.digits_mlp import cross_entropy
from shared.experiment import Preempted
from shared.models import MLP
from shared.trainer import Loop, Trainer, check_global_batch, compile_step

IMAGES, LABELS = data.digits("train")
SOURCE = data.ArraySource({"image": IMAGES, "label": LABELS})
TEST = dict(zip(("image", "label"), data.digits("test")))


def _trainer(seed=0, **kwargs):
    model = MLP((64, 32, 10), rngs=nnx.Rngs(seed))
    schedule = optax.cosine_decay_schedule(3e-3, 60)
    return Trainer(model, optax.adam(schedule), cross_entropy, seed=seed, learning_rate=schedule,
                   eval_metrics=classification_sums, **kwargs)


def _interrupt_after(trainer, step_to_stop):
    """Sends this process SIGTERM right after step `step_to_stop` (1-based) has run."""
    inner = trainer.train_step

    def step(state, batch):
        state, metrics = inner(state, batch)
        if int(state.step) == step_to_stop:
            signal.raise_signal(signal.SIGTERM)
        return state, metrics

    trainer.train_step = step


LOOP = Loop(num_steps=60, batch_size=32, seed=3, log_every=10, checkpoint_every=25)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    trainer = _trainer()
    state, history = trainer.fit(SOURCE, LOOP, checkpoint_dir=tmp_path_factory.mktemp("ref") / "ckpt")
    return jax.device_get(state), history


@pytest.mark.parametrize("stop_at", [7, 33])  # before any periodic checkpoint, and between two
def test_sigterm_at_any_step_saves_it_and_resume_is_exact(tmp_path, uninterrupted, stop_at):
    """Fails if SIGTERM does not checkpoint the step it stopped at, or if a resumed run does not see
    the batches, keys and schedule of an uninterrupted one (params and history would differ)."""
    first = _trainer()
    _interrupt_after(first, stop_at)
    with pytest.raises(Preempted, match=f"step {stop_at}"):
        first.fit(SOURCE, LOOP, checkpoint_dir=tmp_path / "ckpt")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is removed again
    second = _trainer()
    state, history = second.fit(SOURCE, LOOP, checkpoint_dir=tmp_path / "ckpt", resume=True)
    ref_state, ref_history = uninterrupted
    assert int(state.step) == 60
    chex.assert_trees_all_close(jax.device_get(state.params), ref_state.params, rtol=1e-6, atol=1e-7)
    assert [h["step"] for h in history] == [h["step"] for h in ref_history]
    np.testing.assert_allclose([h["loss"] for h in history], [h["loss"] for h in ref_history], rtol=1e-6)


def test_best_checkpoint_survives_an_interruption(tmp_path):
    """Fails if the best evaluation's checkpoint is pruned by `keep`, lost across a resume, or if
    `best_state` is not the state of that step."""
    scores = {10: 0.2, 20: 0.9, 30: 0.1, 40: 0.3, 50: 0.4, 60: 0.5}  # step 20 is best, far behind the newest

    def evaluate(state):
        return {"score": scores[int(state.step)]}

    loop = Loop(num_steps=60, batch_size=32, seed=3, log_every=10, eval_every=10, keep=1, best_metric="score")
    first = _trainer()
    _interrupt_after(first, 35)
    with pytest.raises(Preempted):
        first.fit(SOURCE, loop, checkpoint_dir=tmp_path / "ckpt", evaluate=evaluate)
    second = _trainer()
    second.fit(SOURCE, loop, checkpoint_dir=tmp_path / "ckpt", resume=True, evaluate=evaluate)
    assert second.best_step == 20
    steps = sorted(int(p.name) for p in (tmp_path / "ckpt").iterdir() if p.name.isdigit())
    assert steps == [20, 60]  # the best and the newest (keep=1)
    reference = _trainer()
    at20, _ = reference.fit(SOURCE, Loop(num_steps=20, batch_size=32, seed=3, log_every=10))
    # the schedule is a function of the step, not of num_steps, so 20 steps of the same run are equal
    chex.assert_trees_all_close(jax.device_get(second.best_state.params), jax.device_get(at20.params), rtol=1e-6,
                                atol=1e-7)
    restored = second.restore(tmp_path / "ckpt", "best", best_metric="score")
    assert int(restored.step) == 20


def test_min_mode_keeps_the_smallest(tmp_path):
    losses = {10: 3.0, 20: 1.0, 30: 2.0}
    loop = Loop(num_steps=30, batch_size=32, log_every=10, eval_every=10, keep=1, best_metric="loss",
                best_mode="min")
    trainer = _trainer()
    trainer.fit(SOURCE, loop, checkpoint_dir=tmp_path, evaluate=lambda s: {"loss": losses[int(s.step)]})
    assert trainer.best_step == 20


def test_every_epoch_is_a_new_permutation_and_fit_reads_the_step_indexed_batches():
    """Fails if an epoch loop replays the first epoch's order (the old per-epoch `fit` bug), or if the
    loop started at step s does not read batch s."""
    trainer = _trainer()
    source = data.ArraySource({"x": np.arange(64)})
    loop = Loop(num_steps=12, batch_size=16, seed=1)
    dataset = trainer.dataset(source, loop)
    epochs = [np.concatenate([dataset[e * 4 + i]["x"] for i in range(4)]) for e in range(3)]
    for order in epochs:
        assert sorted(order.tolist()) == list(range(64))
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    for prefetch in (0, 2):
        batches = trainer._batches(dataset, 5, prefetch)
        for s in range(5, 12):
            np.testing.assert_array_equal(next(batches)["x"], dataset[s]["x"])


def test_evaluate_matches_a_hand_computed_accuracy():
    trainer = _trainer()
    trainer.fit(SOURCE, Loop(num_steps=30, batch_size=32, log_every=10))
    model = nnx.merge(trainer.graphdef, trainer.state.params, trainer.state.model_state)
    logits = np.asarray(model(TEST["image"]))
    expected = float(np.mean(logits.argmax(-1) == TEST["label"]))
    got = trainer.evaluate(TEST, 100)  # 450 rows: the last batch is padded and must not count
    assert got["accuracy"] == pytest.approx(expected, abs=1e-6)


def test_history_carries_evaluations_and_learning_rate_is_logged(tmp_path):
    logged = []

    class Ctx:
        checkpoint_dir = tmp_path
        resume = False

        def log_scalars(self, step, metrics, prefix=""):
            logged.append((step, dict(metrics)))

    trainer = _trainer()
    _, history = trainer.fit(SOURCE, Loop(num_steps=20, batch_size=32, log_every=10, eval_every=20), ctx=Ctx(),
                             evaluate=lambda s: trainer.evaluate(TEST, 150, s))
    assert [h["step"] for h in history] == [10, 20] and "eval_accuracy" in history[1]
    step, scalars = logged[0]
    assert step == 10 and {"loss", "learning_rate", "steps_per_s", "examples_per_s"} <= set(scalars)
    assert scalars["learning_rate"] == pytest.approx(float(optax.cosine_decay_schedule(3e-3, 60)(9)), rel=1e-6)


def test_global_batch_must_split_over_processes_and_devices(devices):
    assert check_global_batch(64) == 64
    with pytest.raises(ValueError, match=r"config.train_batch=12 is the global batch .* 8 device"):
        check_global_batch(12, "train_batch")
    with pytest.raises(ValueError, match=r"config\.batch_size=20"):
        _trainer().fit(SOURCE, Loop(num_steps=2, batch_size=20))


@pytest.mark.parametrize("kwargs, needle", [
    ({"num_steps": 0, "batch_size": 8}, "num_steps"),
    ({"num_steps": 5, "batch_size": 8, "best_metric": "acc"}, "eval_every"),
    ({"num_steps": 5, "batch_size": 8, "eval_every": 1, "best_mode": "top"}, "best_mode"),
])
def test_loop_rejects_bad_settings(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        Loop(**kwargs)


def test_eight_devices_match_one_through_the_trainer(devices):
    runs = []
    for mesh in (train.make_mesh(devices=devices), train.make_mesh(devices=devices[:1])):
        trainer = _trainer(mesh=mesh)
        state, history = trainer.fit(SOURCE, Loop(num_steps=10, batch_size=32, log_every=5))
        runs.append((jax.device_get(state.params), [h["loss"] for h in history]))
    chex.assert_trees_all_close(runs[0][0], runs[1][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(runs[0][1], runs[1][1], rtol=1e-5)


def test_resuming_another_models_checkpoint_is_refused_not_skipped(tmp_path):
    """Fails if a checkpoint of another parameter tree is treated as damaged (then --resume would quietly
    start afresh, and eval would say there is no checkpoint)."""
    from shared.checkpoint import CheckpointMismatch

    _trainer().fit(SOURCE, Loop(num_steps=5, batch_size=32, log_every=5), checkpoint_dir=tmp_path)
    other = Trainer(MLP((64, 16, 10), rngs=nnx.Rngs(0)), optax.adam(1e-3), cross_entropy, seed=0)
    with pytest.raises(CheckpointMismatch, match="written for another model or config"):
        other.fit(SOURCE, Loop(num_steps=10, batch_size=32, log_every=5), checkpoint_dir=tmp_path, resume=True)


def test_compile_step_compiles_the_jitted_step_ahead_and_leaves_a_wrapper_alone():
    """`Trainer.fit` runs its steps through `compile_step`: the ahead-compiled step gives the jitted step's
    results, and a plain Python wrapper (no `.lower`) is used as it is."""
    trainer = _trainer()
    batch = train.shard_batch({"image": IMAGES[:32], "label": LABELS[:32]}, trainer.mesh)
    compiled = compile_step(trainer.train_step, trainer.state, batch)
    assert isinstance(compiled, jax.stages.Compiled)
    chex.assert_trees_all_close(compiled(trainer.state, batch), trainer.train_step(trainer.state, batch))

    def wrapper(state, batch):
        return trainer.train_step(state, batch)

    assert compile_step(wrapper, trainer.state, batch) is wrapper


def test_a_donated_state_trains_and_checkpoints_exactly_as_an_undonated_one(tmp_path, monkeypatch):
    """On CPU only a state of at least `DONATE_ON_CPU_MIN_BYTES` is donated (accelerators: always). With the
    threshold at 0 this small MLP's state is donated (its first buffers are consumed), and `fit` gives the same
    trajectory and the same asynchronously saved checkpoints as without: a save never sees a buffer that the
    next step overwrote in place."""
    on_cpu = jax.default_backend() == "cpu"
    assert workarounds.donate_state_argnums(workarounds.DONATE_ON_CPU_MIN_BYTES - 1) == (() if on_cpu else (0,))
    assert workarounds.donate_state_argnums(workarounds.DONATE_ON_CPU_MIN_BYTES) == (0,)
    loop = Loop(num_steps=6, batch_size=32, seed=3, log_every=3, checkpoint_every=2)
    runs = {}
    for donate in (False, True):
        if donate:
            monkeypatch.setattr(workarounds, "DONATE_ON_CPU_MIN_BYTES", 0)
        trainer = _trainer()
        first = trainer.state
        state, history = trainer.fit(SOURCE, loop, checkpoint_dir=tmp_path / str(donate))
        assert all(x.is_deleted() for x in jax.tree.leaves(first.params)) == (donate or not on_cpu)
        saved = [jax.device_get(trainer.restore(tmp_path / str(donate), step)) for step in (4, 6)]
        runs[donate] = jax.device_get(state), history, saved
    chex.assert_trees_all_equal(runs[True][0], runs[False][0])
    assert runs[True][1] == runs[False][1]
    chex.assert_trees_all_equal(runs[True][2], runs[False][2])
