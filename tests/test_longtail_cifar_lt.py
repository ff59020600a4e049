"""longtail.cifar_lt against the official logit-adjustment recipe: schedule, counts, optimiser, data."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from longtail import cifar_lt, configs
from shared import data
from tests.test_shared_cifar_files import write_release


@pytest.mark.parametrize("config, per_epoch, warmup, decays, epochs", [
    (configs.CIFAR10_FULL, 12406 // 128, 20, (604, 926, 1128), 1241),  # google-research logit_adjustment/utils.py
    (configs.CIFAR100_FULL, 10847 // 128, 22, (691, 1059, 1290), 1419),
])
def test_schedule_values_at_the_epoch_boundaries(config, per_epoch, warmup, decays, epochs):
    assert (config.warmup_epochs, config.decay_epochs, config.epochs) == (warmup, decays, epochs)
    assert cifar_lt.step_counts(config, per_epoch * 128 + 5) == (per_epoch, epochs * per_epoch)
    lr = jax.jit(cifar_lt.learning_rate_schedule(config, per_epoch))
    expected = {0: 0.0,  # the official warm-up starts from 0
                warmup * per_epoch // 2: 0.1 * (warmup * per_epoch // 2) / (warmup * per_epoch),
                warmup * per_epoch - 1: 0.1 * (warmup * per_epoch - 1) / (warmup * per_epoch),
                warmup * per_epoch: 0.1,
                decays[0] * per_epoch - 1: 0.1, decays[0] * per_epoch: 0.01,  # the new rate from the boundary on
                decays[1] * per_epoch - 1: 0.01, decays[1] * per_epoch: 0.001,
                decays[2] * per_epoch - 1: 0.001, decays[2] * per_epoch: 1e-4,
                epochs * per_epoch - 1: 1e-4}
    for step, value in expected.items():
        assert float(lr(step)) == pytest.approx(value, rel=1e-5, abs=1e-12), step


def test_per_class_counts_match_the_official_sets():
    counts = data.long_tail_counts(5000, 10, 100.0)
    # int(5000 * 0.01 ** (i / 9)) as in the LDAM / logit-adjustment data scripts
    assert counts.tolist() == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50] and counts.sum() == 12406
    counts100 = data.long_tail_counts(500, 100, 100.0)
    assert counts100.sum() == 10847 and (counts100[0], counts100[-1]) == (500, 5)
    assert counts100.tolist() == [int(500 * 0.01 ** (i / 99)) for i in range(100)]


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    return root, write_release(root, "cifar10", per_file=80)  # 40 images of each class in the training split


def test_long_tailed_train_from_release_files(release):
    root, written = release
    config = dataclasses.replace(configs.CIFAR10_FULL, data_dir=str(root), rho=10.0)
    images, labels, counts = cifar_lt.long_tailed_train(config)
    assert counts.tolist() == data.long_tail_counts(40, 10, 10.0).tolist() == [int(40 * 0.1 ** (i / 9))
                                                                               for i in range(10)]
    assert np.bincount(labels).tolist() == counts.tolist() and len(images) == counts.sum()
    # every kept image is a training image of its class, none twice
    lookup = {x.tobytes(): y for x, y in zip(*written["train"])}
    assert all(lookup[x.tobytes()] == y for x, y in zip(images, labels))
    assert len({x.tobytes() for x in images}) == len(images)
    # the selection depends on subsample_seed only (not on the model seed)
    same = cifar_lt.long_tailed_train(dataclasses.replace(config, seed=7))[0]
    other = cifar_lt.long_tailed_train(dataclasses.replace(config, subsample_seed=1))[0]
    np.testing.assert_array_equal(same, images)
    assert not np.array_equal(other, images)
    test_images, _test_labels = cifar_lt.load_split(config, "test")
    np.testing.assert_array_equal(test_images, written["test"][0])


def test_bad_input_is_named(release):
    root, _ = release
    config = dataclasses.replace(configs.CIFAR10_FULL, data_dir=str(root), rho=41.0)  # 40 // 41 = 0 tail images
    with pytest.raises(ValueError, match=r"config.rho=41 leaves class 9 with no training image.*rho must be <= 40"):
        cifar_lt.long_tailed_train(config)
    with pytest.raises(ValueError, match=r"holds the cifar10 python release .* config\.dataset is 'cifar100'"):
        cifar_lt.load_split(dataclasses.replace(configs.CIFAR100_FULL, data_dir=str(root)), "train")
    for field, value in (("model", "resnet18"), ("input_scaling", "none"), ("decay_epochs", (926, 604))):
        with pytest.raises(ValueError, match=f"config.{field}"):
            dataclasses.replace(configs.CIFAR10_FULL, **{field: value})


def test_optimizer_is_nesterov_sgd_with_keras_l2_on_conv_and_dense_weights_only():
    """With zero loss gradient the first update is −lr·(1 + m)·2e-4·w (Nesterov: g + m·(m·0 + g)) on conv
    kernels and the dense kernel and bias, and 0 on BatchNorm's scale and offset."""
    config = dataclasses.replace(configs.CIFAR10_FULL, warmup_epochs=0, decay_epochs=())  # lr 0.1 throughout
    params = {"conv": {"kernel": jnp.full((3, 3, 2, 4), 2.0)}, "bn": {"scale": jnp.full((4,), 3.0),
                                                                      "bias": jnp.full((4,), 5.0)},
              "head": {"kernel": jnp.full((4, 10), -1.0), "bias": jnp.full((10,), 0.5)}}
    tx = cifar_lt.optimizer(config, steps_per_epoch=96)
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    factor = -0.1 * (1 + 0.9) * 2e-4
    expected = {"conv": {"kernel": factor * 2.0}, "bn": {"scale": 0.0, "bias": 0.0},
                     "head": {"kernel": factor * -1.0, "bias": factor * 0.5}}
    for path, value in jax.tree_util.tree_leaves_with_path(updates):
        want = expected[path[0].key][path[1].key]
        np.testing.assert_allclose(value, want, rtol=1e-6, err_msg=jax.tree_util.keystr(path))
    plain = cifar_lt.optimizer(dataclasses.replace(config, nesterov=False, weight_decay_batchnorm=True), 96)
    updates, _ = plain.update(jax.tree.map(jnp.zeros_like, params), plain.init(params), params)
    np.testing.assert_allclose(updates["bn"]["scale"], -0.1 * 2e-4 * 3.0, rtol=1e-6)


def test_momentum_follows_keras_while_the_rate_changes():
    """Two warm-up steps (η_0 = 0, η_1 = 0.1 / (W·S)) against Keras's SGD by hand: v ← m v − η g,
    w ← w + m v − η g. optax.sgd (rate after the trace) would give −η_1 (g_1 + m g_1 + m² g_0) instead."""
    config = dataclasses.replace(configs.CIFAR10_FULL, weight_decay=0.0)
    params = {"w": jnp.zeros((3,))}
    g0, g1 = jnp.array([1.0, -2.0, 0.5]), jnp.array([0.25, 1.0, -1.0])
    tx = cifar_lt.optimizer(config, steps_per_epoch=4)
    state = tx.init(params)
    eta, m = [0.0, 0.1 * 1 / (20 * 4)], 0.9
    v = jnp.zeros(3)
    for t, g in enumerate((g0, g1)):
        updates, state = tx.update({"w": g}, state, params)
        v = m * v - eta[t] * g
        np.testing.assert_allclose(updates["w"], m * v - eta[t] * g, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(updates["w"], -(1 + m) * eta[1] * g1, rtol=1e-6)  # η_0 = 0: g_0 leaves no trace


def test_decay_mask_on_the_official_network_leaves_out_batchnorm_only():
    from flax import nnx

    from shared.models import count_params

    model = nnx.eval_shape(lambda: cifar_lt.make_model(configs.CIFAR10_FULL))
    params = nnx.state(model, nnx.Param)
    mask = cifar_lt.decay_mask(params)
    decayed = sum(p.size for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask)) if m)
    assert count_params(model) == 300_762 and decayed == 300_762 - 3_744  # 1,872 BN channels × (scale, bias)
    assert jax.tree.structure(mask) == jax.tree.structure(params)


def test_input_scaling():
    images = jnp.array([0, 255], jnp.uint8).reshape(2, 1, 1, 1) * jnp.ones((1, 1, 1, 3), jnp.uint8)
    np.testing.assert_allclose(cifar_lt.normalise(images, "centre")[:, 0, 0, 0], [-0.5, 0.5])
    standard = cifar_lt.normalise(images, "standardise")[1, 0, 0]
    np.testing.assert_allclose(standard, (1 - cifar_lt.MEAN) / cifar_lt.STD, rtol=1e-6)
