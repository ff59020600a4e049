"""The experiments `kexue` can run for `shared` (the harness's own end-to-end check)."""

from shared import digits_mlp
from shared.experiment import Experiment

EXPERIMENTS: dict[str, Experiment] = {
    "digits_mlp": Experiment("shared.digits_mlp", digits_mlp.run,
                             {"quick": digits_mlp.QUICK, "full": digits_mlp.FULL},
                             "MLP on digits through the harness (>= 95% test accuracy in under a minute)"),
}
