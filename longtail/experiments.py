"""The experiments `kexue` can run for `longtail`.

Only configs are imported here; each run function imports its (heavier) module when called.
"""

from longtail import configs
from shared.experiment import Experiment


def run_synthetic(config, ctx):
    from longtail import synthetic

    return synthetic.run(config, ctx)


def run_digits_lt(config, ctx):
    from longtail import digits_lt

    return digits_lt.run(config, ctx)


def run_cifar_lt(config, ctx):
    from longtail import cifar_lt

    return cifar_lt.run(config, ctx)


EXPERIMENTS: dict[str, Experiment] = {
    "synthetic": Experiment(
        "longtail.synthetic", run_synthetic,
        {"quick": configs.SYNTHETIC_QUICK, "full": configs.SYNTHETIC_FULL},
        "2-D Gaussians, 5% positives: ERM / balanced CE / LDAM / equalised / logit adjustment vs Bayes (Menon et al. Fig. 2)"),
    "digits_lt": Experiment(
        "longtail.digits_lt", run_digits_lt,
        {"quick": configs.DIGITS_QUICK, "full": configs.DIGITS_FULL},
        "long-tailed digits (ρ = 10, 100): logit adjustment vs weighting, focal, class-balanced, smoothed-F1 CE"),
    "cifar_lt": Experiment(
        "longtail.cifar_lt", run_cifar_lt,
        {"quick": configs.CIFAR_QUICK, "full": configs.CIFAR10_FULL, "cifar100": configs.CIFAR100_FULL},
        "CIFAR-10/100-LT (ρ = 100), the official code's ResNet-32 and schedule (1241 / 1419 epochs; Menon et al. "
        "Table 3); quick = mock-data smoke run",
        reproduce=False),
}
