"""The experiments `kexue` can run for `mwp`."""

from mwp import configs
from shared.experiment import Experiment, lazy_run

EXPERIMENTS: dict[str, Experiment] = {
    "synthetic_solver": Experiment(
        "mwp.synthetic_solver", lazy_run("mwp.solver:run_synthetic"),
        {"quick": configs.SYNTHETIC_QUICK, "full": configs.SYNTHETIC_FULL},
        "small UniLM from scratch on synthetic Chinese word problems; answer accuracy, beam 1/2/3",
        evaluate=lazy_run("mwp.use:evaluate_run"), predict=lazy_run("mwp.use:predict_run")),
    "ape210k": Experiment(
        "mwp.ape210k", lazy_run("mwp.ape210k:run_ape210k"),
        {"quick": configs.APE210K_QUICK, "full": configs.APE210K_FULL, "large": configs.APE210K_LARGE},
        "BERT UniLM fine-tuned on the real Ape210K files (local data + HF checkpoint), beam 1/2/3",
        reproduce=False, evaluate=lazy_run("mwp.use:evaluate_ape210k"), predict=lazy_run("mwp.use:predict_ape210k")),
}
