"""The experiments `kexue` can run for `flooding`."""

from flooding import cifar, configs, derivation, digits, synthetic
from shared.experiment import Experiment

EXPERIMENTS: dict[str, Experiment] = {
    "synthetic": Experiment("flooding.synthetic", synthetic.run,
                            {"quick": configs.SYNTHETIC_QUICK, "full": configs.SYNTHETIC_FULL},
                            "the paper's Gaussian / sinusoid / spiral sets: flood-level sweep, second descent"),
    "digits": Experiment("flooding.digits", digits.run, {"quick": configs.DIGITS_QUICK, "full": configs.DIGITS_FULL},
                         "digits with 0/20% label noise: flooding, iFlood, gradient-norm penalty, SAM"),
    "derivation": Experiment("flooding.derivation", derivation.run,
                             {"quick": configs.DerivationConfig(), "full": configs.DerivationConfig(num_eps=17)},
                             "descent+ascent of size ε = −ε²∇(½‖∇L‖²) + O(ε³), checked on a log-log plot"),
    "cifar10": Experiment("flooding.cifar10", cifar.run, {"quick": configs.CIFAR_QUICK, "full": configs.CIFAR_FULL},
                          "CIFAR-10 ResNet-18 flood-level sweep (needs a prepared TFDS data_dir)", reproduce=False),
}
