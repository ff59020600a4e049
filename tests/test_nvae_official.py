"""nvae_jax against the official NVlabs/NVAE code: converted checkpoints reproduce its outputs, and its protocol.

The fixture (tests/fixtures/nvae_parity, made by scripts/make_nvae_parity_fixture.py from the official
code on CPU) holds, per tiny config, the official state_dict, a batch, the Normal noise the official code
drew and its outputs. Here the converted model runs with that noise injected (`shared.hvae.Normal.sample`
patched to return μ + σ·ε with the recorded ε, in drawing order) and must reproduce every output to
1e-4 relative, without torch.
"""

from __future__ import annotations

import dataclasses
import gzip
import itertools
import json
import pathlib
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nvae_jax import convert, evaluate, train
from nvae_jax.configs import DIGITS, Config
from shared import hvae
from shared.overrides import ConfigError

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "nvae_parity"
CONFIGS = ["mnist_flow_adaptive", "cifar10_dmol", "cifar10_normal"]
# the Bernoulli/flow/adaptive config runs by default; DMoL and Normal (a CIFAR-sized model each) are slow
PARAMS = [CONFIGS[0], *(pytest.param(c, marks=pytest.mark.slow) for c in CONFIGS[1:])]
RTOL = 1e-4


def _load(name):
    return np.load(FIXTURES / f"{name}.npz")


def _inject(monkeypatch, fixture, prefix):
    """From now on the model's Normal samples use the official noise `prefix`0, 1, ... in turn (and again
    from 0 after the last: a second pass draws the same noise)."""
    keys = sorted((k for k in fixture.files if k.startswith(prefix)), key=lambda k: int(k[len(prefix):]))
    noise = itertools.cycle([jnp.asarray(fixture[k]) for k in keys])
    monkeypatch.setattr(hvae.Normal, "sample", lambda self, key: self.mu + self.sigma * next(noise))
    return keys


def _unrolled(model):
    """The model with its latent groups unrolled (`scan_groups="unroll"`): `_inject`'s noise is Python state, read
    once per traced group, and a scanned group is traced once for all the groups of its scale. Scanned and
    unrolled groups compute the same (tests/test_nvae_scan.py), so parity holds for both."""
    model.cfg = dataclasses.replace(model.cfg, scan_groups="unroll")
    return model


def _close(ours, theirs, what):
    """max |ours − theirs| ≤ RTOL · max |theirs| (relative to the output's scale)."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape, what
    err = np.max(np.abs(ours - theirs)) / max(np.max(np.abs(theirs)), 1e-30)
    assert err <= RTOL, f"{what}: relative error {err:.2e}"


def _forward(model, x):
    """(recon NLL [B], KL per group [B, G], decoder output), jitted (the injected noise is traced in)."""
    return nnx.jit(lambda m, xx: m(xx, jax.random.PRNGKey(0)))(model, jnp.asarray(x))


def _balanced(cfg: Config, recon, kl, beta):
    alpha = hvae.kl_balancer_coeffs(cfg.groups)
    kl_w, _ = hvae.kl_balance(kl, jnp.float32(beta), alpha, True)
    return jnp.mean(recon + kl_w)


@pytest.fixture(scope="module", params=PARAMS)
def converted(request):
    fixture = _load(request.param)
    tensors = {k[3:]: fixture[k] for k in fixture.files if k.startswith("sd/")}
    model, _ = convert.from_state_dict(tensors, json.loads(str(fixture["args_json"])), request.param)
    return request.param, fixture, _unrolled(model), model.cfg


def test_fixture_covers_bernoulli_dmol_normal_flows_and_adaptive_groups():
    cfgs = [convert.config_from_args(json.loads(str(_load(n)["args_json"]))) for n in CONFIGS]
    assert {c.output for c in cfgs} == {"bernoulli", "dmol", "normal"}
    assert any(c.num_nf >= 1 for c in cfgs) and any(c.adaptive_groups and len(set(c.groups)) > 1 for c in cfgs)
    assert sum(p.stat().st_size for p in FIXTURES.iterdir()) < 2_000_000


def test_eval_outputs_match_the_official_code(converted, monkeypatch):
    """Eval-mode BN: per-group KL, log p(x|z), the IW weight terms, the decoder output and the balanced loss."""
    name, fixture, model, cfg = converted
    x = jnp.asarray(fixture["x"])
    model.eval()
    _inject(monkeypatch, fixture, "eps_eval_")
    recon, kl, out, log_w = nnx.jit(lambda m, xx: (*m(xx, jax.random.PRNGKey(0)),
                                                   m.log_weight(xx, jax.random.PRNGKey(0))))(model, x)
    _close(kl, fixture["eval_kl"], f"{name} per-group KL")
    _close(-recon, fixture["eval_log_px"], f"{name} log p(x|z)")
    order = convert.dmol_channel_order(cfg.num_mixtures) if cfg.output == "dmol" else slice(None)
    _close(out, fixture["eval_logits"][..., order], f"{name} decoder output")
    _close(_balanced(cfg, recon, kl, fixture["beta"]), fixture["eval_loss"], f"{name} balanced loss")
    _close(log_w, fixture["eval_log_px"] + fixture["eval_log_p"] - fixture["eval_log_q"], f"{name} log weight")


def test_negative_elbo_is_the_official_nelbo(converted, monkeypatch):
    name, fixture, model, _ = converted
    _inject(monkeypatch, fixture, "eps_eval_")
    nelbo = evaluate.negative_elbo(model, fixture["x"], jax.random.PRNGKey(0))
    _close(nelbo, fixture["eval_kl"].sum(1) - fixture["eval_log_px"], f"{name} −ELBO")


def test_sample_at_temperature_matches_the_official_code(converted, monkeypatch):
    name, fixture, model, _ = converted
    model.eval()
    used = _inject(monkeypatch, fixture, "eps_sample_")
    out = nnx.jit(lambda m: m.sample(jax.random.PRNGKey(0), fixture["x"].shape[0], 0.7))(model)
    order = convert.dmol_channel_order(model.cfg.num_mixtures) if model.cfg.output == "dmol" else slice(None)
    _close(out, fixture["sample_logits"][..., order], f"{name} sample at t = 0.7 ({len(used)} noise draws)")


def test_train_mode_losses_match_the_official_code(converted, monkeypatch):
    """Train-mode BN (batch statistics): per-group KL, log p(x|z) and the balanced loss."""
    name, fixture, model, cfg = converted
    model.train()
    try:
        _inject(monkeypatch, fixture, "eps_train_")
        recon, kl, _ = _forward(model, fixture["x"])
    finally:
        model.eval()
    _close(kl, fixture["train_kl"], f"{name} train KL")
    _close(-recon, fixture["train_log_px"], f"{name} train log p(x|z)")
    _close(_balanced(cfg, recon, kl, fixture["beta"]), fixture["train_loss"], f"{name} train balanced loss")


def test_official_checkpoint_file_is_read_without_torch_and_reproduces_its_model(monkeypatch):
    checkpoint = convert.read_checkpoint(FIXTURES / "official_checkpoint.pt")
    assert {"state_dict", "args", "optimizer", "global_step", "epoch"} <= set(checkpoint)
    assert checkpoint["args"]["arch_instance"] == "res_mbconv" and checkpoint["global_step"] == 3
    model, cfg = convert.from_official(FIXTURES / "official_checkpoint.pt")
    assert cfg.dataset == "mnist" and cfg.groups == (2,)
    fixture = _load("checkpoint")
    _inject(monkeypatch, fixture, "eps_eval_")
    nelbo = evaluate.negative_elbo(_unrolled(model), fixture["x"], jax.random.PRNGKey(0))
    _close(nelbo, fixture["eval_kl"].sum(1) - fixture["eval_log_px"], "checkpoint −ELBO")


def test_convert_cli_writes_a_run_directory_that_restores(tmp_path, capsys):
    from shared.use import open_run, restore_model

    out = tmp_path / "run"
    assert convert.main([str(FIXTURES / "official_checkpoint.pt"), str(out)]) == 0
    model, cfg = convert.from_official(FIXTURES / "official_checkpoint.pt")
    run = open_run(out, "nvae_jax.mnist", cfg, [])
    assert run.config == cfg
    trainer = train.make_trainer(cfg, 2)
    state = restore_model(trainer, run)
    assert int(state.step) == 3
    np.testing.assert_array_equal(np.asarray(state.params["stem"]["v"][...]), np.asarray(model.stem.v[...]))
    bn = model.pre[0].bn1
    np.testing.assert_array_equal(np.asarray(state.model_state["pre"][0]["bn1"]["mean"][...]), np.asarray(bn.mean[...]))
    np.testing.assert_array_equal(np.asarray(state.model_state["stem"]["sn_u"][...]), np.asarray(model.stem.sn_u[...]))
    assert "kexue eval nvae_jax.mnist" in capsys.readouterr().out


def _exit_line(args, capsys):
    assert convert.main([str(a) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error:")
    return err


def test_bad_inputs_are_one_line_and_exit_code_2(tmp_path, capsys, monkeypatch):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    assert "not a checkpoint written by torch.save" in _exit_line([junk, tmp_path / "o1"], capsys)
    data = (FIXTURES / "official_checkpoint.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    assert "cut.pt" in _exit_line([cut, tmp_path / "o2"], capsys)
    other = tmp_path / "other.pt"
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01K\x01s.")  # {"a": 1}
    assert "needs 'state_dict' and 'args'" in _exit_line([other, tmp_path / "o3"], capsys)
    real = convert.read_checkpoint(FIXTURES / "official_checkpoint.pt")
    monkeypatch.setattr(convert, "read_checkpoint",
                        lambda path: {**real, "args": {**real["args"], "arch_instance": "res_elu"}})
    assert "arch_instance='res_elu' is not implemented" in _exit_line([other, tmp_path / "o4"], capsys)


@pytest.mark.parametrize("change, named", [({"dataset": "lsun_church_64"}, "dataset"),
                                           ({"res_dist": False}, "res_dist"),
                                           ({"num_channels_dec": 8}, "num_channels_dec"),
                                           ({"num_latent_scales": 1, "num_groups_per_scale": 1}, "vanilla VAE")])
def test_unimplemented_architecture_options_are_named(change, named):
    args = convert.read_checkpoint(FIXTURES / "official_checkpoint.pt")["args"]
    with pytest.raises(ConfigError, match=named):
        convert.config_from_args({**args, **change})


def test_a_state_dict_of_another_architecture_is_refused():
    checkpoint = convert.read_checkpoint(FIXTURES / "official_checkpoint.pt")
    with pytest.raises(ConfigError, match=r"does not fit|has shape"):
        convert.from_state_dict(checkpoint["state_dict"], {**checkpoint["args"], "num_latent_per_group": 8})


# ------------------------------------------------------------------------------------- protocol
def test_official_lr_schedule_is_torchs_recursive_cosine_per_epoch():
    """Warm-up lr·step/W from 0, then PyTorch's recursive CosineAnnealingLR stepped once per epoch from lr_W."""
    cfg = Config(epochs=12, warmup_epochs=2, learning_rate=1e-2, learning_rate_min=1e-4)
    per_epoch, total = 5, 60
    sched = train.lr_schedule(cfg, total, per_epoch * cfg.warmup_epochs)
    warm, t_max, lr = 10, cfg.epochs - cfg.warmup_epochs - 1, None
    for step in range(total):
        epoch = step // per_epoch
        if step % per_epoch == 0 and epoch > cfg.warmup_epochs:  # train.py: scheduler.step() at the epoch start
            t = epoch - cfg.warmup_epochs
            lr = 1e-4 + (lr - 1e-4) * (1 + np.cos(np.pi * t / t_max)) / (1 + np.cos(np.pi * (t - 1) / t_max))
        if step < warm:
            lr = 1e-2 * step / warm
        np.testing.assert_allclose(float(sched(step)), lr, rtol=1e-5, atol=1e-9, err_msg=f"step {step}")
    assert abs(float(sched(total - 1)) - 1e-4) < 1e-9  # the last epoch reaches lr_min


def test_kl_coefficient_and_lambda_anneal_follow_the_official_formulas():
    cfg = Config(kl_anneal_portion=0.3, kl_const_portion=0.1, kl_min_coeff=1e-4, weight_decay_norm=1e-2,
                 weight_decay_norm_anneal=True, weight_decay_norm_init=1.0)
    for step in (0, 5, 10, 11, 25, 40, 41, 100):
        expected = max(min((step - 0.1 * 100) / (0.3 * 100), 1.0), 1e-4)  # utils.kl_coeff
        got = hvae.kl_warmup_coeff(step, 100, cfg.kl_anneal_portion, cfg.kl_min_coeff, cfg.kl_const_portion)
        np.testing.assert_allclose(float(got), expected, rtol=1e-6)
    np.testing.assert_allclose(float(train.spectral_coeff(cfg, jnp.float32(0.0))), 1.0, rtol=1e-6)
    np.testing.assert_allclose(float(train.spectral_coeff(cfg, jnp.float32(0.5))), 0.1, rtol=1e-5)
    np.testing.assert_allclose(float(train.spectral_coeff(cfg, jnp.float32(1.0))), 1e-2, rtol=1e-5)
    assert float(train.spectral_coeff(DIGITS, jnp.float32(0.3))) == pytest.approx(DIGITS.weight_decay_norm)


def test_dmol_top_edge_official_value_breaks_normalisation():
    """Σ over the 256 levels of P(x): 1 with our edge (0.999); above 1 with the official 0.99 (254 is an edge too)."""
    from nvae_jax.layers import dmol_log_prob

    m = 3
    params = jnp.broadcast_to(jax.random.normal(jax.random.PRNGKey(0), (1, 1, 1, 4 * m)) * 0.5, (256, 1, 1, 4 * m))
    levels = (jnp.arange(256) / 255.0 * 2.0 - 1.0)[:, None, None, None]  # one channel: no coupling
    total = jax.jit(lambda edge: jnp.sum(jnp.exp(dmol_log_prob(params, levels, m, 8, edge))))
    ours, official = float(total(0.999)), float(total(0.99))
    assert abs(ours - 1.0) < 1e-4 and official > 1.0 + 1e-4, (ours, official)


def test_mnist_test_binarisation_is_stochastic_and_fixed():
    from nvae_jax.full import preprocess

    cfg = Config(dataset="mnist", image_size=32)
    images = np.full((4, 28, 28, 1), 128, np.uint8)
    a, b = preprocess(cfg, images, "stochastic"), preprocess(cfg, images, "stochastic")
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) == {0.0, 1.0} and abs(a[:, 2:30, 2:30].mean() - 128 / 255) < 0.03
    assert a[:, :2].sum() == 0  # the padding stays 0
    assert preprocess(cfg, images, "threshold")[:, 2:30, 2:30].min() == 1.0  # 128/255 > 0.5


def test_mnist_idx_reader_reads_plain_and_gzip_files_and_names_a_missing_one(tmp_path):
    from shared.idx import mnist_idx, read_idx

    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    labels = np.array([7, 2, 1], np.uint8)
    header = b"\0\0\x08\x03" + np.array([3, 28, 28], ">u4").tobytes()
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(header + images.tobytes())
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(b"\0\0\x08\x01" + np.array([3], ">u4").tobytes() + labels.tobytes()))
    x, y = mnist_idx(tmp_path, "test")
    np.testing.assert_array_equal(x[..., 0], images)
    np.testing.assert_array_equal(y, labels)
    with pytest.raises(ConfigError, match="train-images-idx3-ubyte"):
        mnist_idx(tmp_path, "train")
    (tmp_path / "bad").write_bytes(header + images.tobytes()[:100])
    with pytest.raises(ConfigError, match="truncated"):
        read_idx(tmp_path / "bad")
