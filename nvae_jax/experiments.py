"""The experiments `kexue` can run for `nvae_jax`."""

from shared.experiment import Experiment, lazy_run


def _experiments():
    from nvae_jax import configs

    exps = {"digits": Experiment("nvae_jax.digits", lazy_run("nvae_jax.digits:run_digits"),
                                 {"quick": configs.DIGITS, "full": configs.DIGITS},
                                 "2-scale NVAE on binarised 16x16 digits vs a 1-group VAE (IW test NLL, nats)",
                                 evaluate=lazy_run("nvae_jax.use:evaluate_run"),
                                 sample=lazy_run("nvae_jax.use:sample_run"),
                                 models=("nvae", "vae_1group"))}
    for name, cfg, what in (("mnist", configs.MNIST, "binarised MNIST, 78.01 nats"),
                            ("cifar10", configs.CIFAR10, "CIFAR-10, 2.91 bits/dim"),
                            ("celeba64", configs.CELEBA64, "CelebA 64x64, 2.03 bits/dim")):
        exps[name] = Experiment(f"nvae_jax.{name}", lazy_run("nvae_jax.full:run_full"),
                                {"quick": configs.smoke(cfg), "full": cfg},
                                f"NVAE, official config, {what} (needs TFDS data); quick = mock-data smoke run",
                                reproduce=False, evaluate=lazy_run("nvae_jax.use:evaluate_run"),
                                sample=lazy_run("nvae_jax.use:sample_run"))
    return exps


EXPERIMENTS: dict[str, Experiment] = _experiments()
