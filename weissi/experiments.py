"""The experiments `kexue` can run for `weissi`."""

from shared.experiment import Experiment, lazy_run
from weissi import configs

EXPERIMENTS: dict[str, Experiment] = {
    "invariance": Experiment("weissi.invariance", lazy_run("weissi.invariance:run"),
                             {"quick": configs.InvarianceConfig(), "full": configs.InvarianceConfig()},
                             "a ReLU MLP under weight-scale shifts: same function, L2 moves, WEISSI does not"),
    "digits": Experiment("weissi.digits", lazy_run("weissi.digits:run"),
                         {"quick": configs.DIGITS_QUICK, "full": configs.DIGITS_FULL, "cnn": configs.DIGITS_CNN},
                         "none / L2 / WD / AdamW / WEISSI / decoupled WEISSI: clean, FGSM and PGD-10 accuracy"),
    "cifar10": Experiment("weissi.cifar10", lazy_run("weissi.cifar:run"),
                          {"quick": configs.CIFAR_QUICK, "full": configs.CIFAR_FULL},
                          "CIFAR-10 ResNet-18, each regulariser over a small λ grid (needs a TFDS data_dir)",
                          reproduce=False, evaluate=lazy_run("weissi.cifar:evaluate_run")),
}
