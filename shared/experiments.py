"""The experiments `kexue` can run for `shared` (the harness's own end-to-end check)."""

from shared import configs
from shared.experiment import Experiment, lazy_run

EXPERIMENTS: dict[str, Experiment] = {
    "digits_mlp": Experiment("shared.digits_mlp", lazy_run("shared.digits_mlp:run"),
                             {"quick": configs.DIGITS_MLP_QUICK, "full": configs.DIGITS_MLP_FULL},
                             "MLP on digits through the harness (>= 95% test accuracy in under a minute)",
                             evaluate=lazy_run("shared.digits_mlp:evaluate_run")),
}
