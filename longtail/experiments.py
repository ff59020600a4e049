"""The experiments `kexue` can run for `longtail`.

Only configs are imported here; each run function imports its (heavier) module when called.
"""

from longtail import configs
from shared.experiment import Experiment, lazy_run

EXPERIMENTS: dict[str, Experiment] = {
    "synthetic": Experiment(
        "longtail.synthetic", lazy_run("longtail.synthetic:run"),
        {"quick": configs.SYNTHETIC_QUICK, "full": configs.SYNTHETIC_FULL},
        "2-D Gaussians, 5% positives: ERM / balanced CE / LDAM / equalised / logit adjustment vs Bayes "
        "(Menon et al. Fig. 2)"),
    "digits_lt": Experiment(
        "longtail.digits_lt", lazy_run("longtail.digits_lt:run"),
        {"quick": configs.DIGITS_QUICK, "full": configs.DIGITS_FULL},
        "long-tailed digits (ρ = 10, 100): logit adjustment vs weighting, focal, class-balanced, smoothed-F1 CE"),
    "cifar_lt": Experiment(
        "longtail.cifar_lt", lazy_run("longtail.cifar_lt:run"),
        {"quick": configs.CIFAR_QUICK, "full": configs.CIFAR10_FULL, "cifar100": configs.CIFAR100_FULL},
        "CIFAR-10/100-LT (ρ = 100), the official code's ResNet-32 and schedule (1241 / 1419 epochs; Menon et al. "
        "Table 3); quick = mock-data smoke run",
        reproduce=False, evaluate=lazy_run("longtail.cifar_lt:evaluate_run")),
}
