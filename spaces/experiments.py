"""The experiments `kexue` can run for `spaces`."""

from shared.experiment import Experiment
from spaces.configs import FULL, QUICK


def _run(config, ctx):
    from spaces.pipeline import run_pipeline  # lazy: keeps `kexue` start-up light

    return run_pipeline(config, ctx)


EXPERIMENTS: dict[str, Experiment] = {
    "synthetic_pipeline": Experiment(
        "spaces.synthetic_pipeline", _run, {"quick": QUICK},
        "SPACES on synthetic judgments: oracle / extract-only / extract+generate, copy and sparse-softmax ablations"),
    "cail2020": Experiment(
        "spaces.cail2020", _run, {"quick": QUICK, "full": FULL},
        "SPACES on CAIL2020 files with a local BERT checkpoint (15-fold DGCNN, 1,024-token copy generator)",
        reproduce=False),
}
