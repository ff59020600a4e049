"""The experiments `kexue` can run for `flooding`."""

from flooding import configs
from shared.experiment import Experiment, lazy_run

EXPERIMENTS: dict[str, Experiment] = {
    "synthetic": Experiment("flooding.synthetic", lazy_run("flooding.synthetic:run"),
                            {"quick": configs.SYNTHETIC_QUICK, "full": configs.SYNTHETIC_FULL},
                            "the paper's Gaussian / sinusoid / spiral sets: flood-level sweep, second descent"),
    "digits": Experiment("flooding.digits", lazy_run("flooding.digits:run"),
                         {"quick": configs.DIGITS_QUICK, "full": configs.DIGITS_FULL},
                         "digits with 0/20% label noise: flooding, iFlood, gradient-norm penalty, SAM"),
    "derivation": Experiment("flooding.derivation", lazy_run("flooding.derivation:run"),
                             {"quick": configs.DerivationConfig(), "full": configs.DerivationConfig(num_eps=17)},
                             "descent+ascent of size ε = −ε²∇(½‖∇L‖²) + O(ε³), checked on a log-log plot"),
    "cifar10": Experiment("flooding.cifar10", lazy_run("flooding.cifar:run"),
                          {"quick": configs.CIFAR_QUICK, "full": configs.CIFAR_FULL},
                          "CIFAR-10 ResNet-18 flood-level sweep (needs a prepared TFDS data_dir)", reproduce=False,
                          evaluate=lazy_run("flooding.cifar:evaluate_run")),
}
