"""The experiments `kexue` can run for `spaces`."""

from shared.experiment import Experiment, lazy_run
from spaces.configs import FULL, QUICK

EXPERIMENTS: dict[str, Experiment] = {
    "synthetic_pipeline": Experiment(
        "spaces.synthetic_pipeline", lazy_run("spaces.pipeline:run_pipeline"), {"quick": QUICK},
        "SPACES on synthetic judgments: oracle / extract-only / extract+generate, copy and sparse-softmax ablations",
        evaluate=lazy_run("spaces.use:evaluate_run"), predict=lazy_run("spaces.use:predict_run")),
    "cail2020": Experiment(
        "spaces.cail2020", lazy_run("spaces.pipeline:run_pipeline"), {"quick": QUICK, "full": FULL},
        "SPACES on CAIL2020 files with a local BERT checkpoint (15-fold DGCNN, 1,024-token copy generator)",
        reproduce=False, evaluate=lazy_run("spaces.use:evaluate_run"), predict=lazy_run("spaces.use:predict_run")),
}
