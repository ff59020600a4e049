"""Mutation check: plants known bugs one at a time and reports which ones the tests miss.

Each mutant replaces one exact snippet of a core module (losses, sparse softmax, transforms, hvae,
the train step, the expression engine, and the features named in issue 31) by a buggy version, in a
temporary copy of the working tree (never in the checkout itself), then runs the test files of the
planted module with `pytest -x -n 0`. A mutant is *caught* when the tests fail, *survives* when
they pass, and is *stale* when its snippet no longer occurs exactly once (the module changed: update
the mutant). Before the mutants, each set of test files runs once unmutated; a set that already
fails makes its mutants *invalid* rather than caught.

    python scripts/mutants.py                  # all mutants (CPU-heavy: tens of minutes on 2 cores)
    python scripts/mutants.py --list           # names, and whether each snippet still applies
    python scripts/mutants.py --only flooding_sign_reversed --timeout 600
    python scripts/mutants.py --tests-from b68c19a   # the same mutants against older test files

Exit status: 0 if every applicable mutant is caught, 1 otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # the planted file, relative to the repository root
    old: str  # must occur exactly once in the file
    new: str
    tests: tuple[str, ...]  # the test files of the planted module


LOSS_TESTS = ("tests/test_shared_losses.py", "tests/test_shared_conformance.py")
SPARSE_TESTS = ("tests/test_shared_sparse_softmax.py",)
TRANSFORM_TESTS = ("tests/test_shared_transforms.py",)
HVAE_TESTS = ("tests/test_shared_hvae.py",)
TRAIN_TESTS = ("tests/test_shared_train.py",)
EXPR_TESTS = ("tests/test_mwp_expressions.py",)

MUTANTS = (
    # ---------------------------------------------------------------- shared/losses.py
    Mutant("la_ce_label_shift_dropped", "shared/losses.py",
           "return (lse - f_y - _gather(shift, labels)).astype(logits.dtype)",
           "return (lse - f_y).astype(logits.dtype)", LOSS_TESTS),
    Mutant("focal_gamma_ignored", "shared/losses.py",
           "loss = -(one_minus_p**gamma) * log_p", "loss = -log_p", LOSS_TESTS),
    Mutant("pairwise_class_weights_ignored", "shared/losses.py",
           "loss = loss * _gather(w, labels).astype(loss.dtype)", "loss = loss", LOSS_TESTS),
    Mutant("smoothed_f1_weights_swapped", "shared/losses.py",
           "loss = -(1.0 - f1 / 2) * y * jax.nn.log_sigmoid(x) - (f1 / 2) * (1.0 - y) * jax.nn.log_sigmoid(-x)",
           "loss = -(f1 / 2) * y * jax.nn.log_sigmoid(x) - (1.0 - f1 / 2) * (1.0 - y) * jax.nn.log_sigmoid(-x)",
           LOSS_TESTS),
    Mutant("soft_f1_factor_two_dropped", "shared/losses.py",
           "return 2.0 * jnp.sum(y * p) / jnp.maximum(", "return jnp.sum(y * p) / jnp.maximum(", LOSS_TESTS),
    Mutant("dice_smooth_not_halved", "shared/losses.py",
           "smooth=smooth / 2, apply_softmax", "smooth=smooth, apply_softmax", LOSS_TESTS),
    Mutant("multilabel_ce_negative_one_dropped", "shared/losses.py",
           "s_neg = jnp.concatenate([zeros, jnp.where(pos, neg_inf, x)], axis=-1)",
           "s_neg = jnp.concatenate([zeros + neg_inf, jnp.where(pos, neg_inf, x)], axis=-1)", LOSS_TESTS),
    # ---------------------------------------------------------------- shared/sparse_softmax.py
    Mutant("sparse_ce_tangent_label_term_dropped", "shared/sparse_softmax.py",
           "return loss, (jnp.sum(pk * dxk, axis=-1) - dxt).astype(x.dtype)",
           "return loss, jnp.sum(pk * dxk, axis=-1).astype(x.dtype)", SPARSE_TESTS),
    Mutant("sparse_softmax_tangent_no_coupling", "shared/sparse_softmax.py",
           "dq = q * (dk - jnp.sum(q * dk, axis=-1, keepdims=True))", "dq = q * dk", SPARSE_TESTS),
    Mutant("two_stage_top_k_chunk_min", "shared/sparse_softmax.py",
           "maxima = jax.lax.reduce_window(x, neg_inf, jax.lax.max, window, window, padding)",
           "maxima = jax.lax.reduce_window(x, -neg_inf, jax.lax.min, window, window, padding)", SPARSE_TESTS),
    # ---------------------------------------------------------------- shared/transforms.py
    Mutant("flooding_sign_reversed", "shared/transforms.py",
           "sign = jnp.sign(jnp.asarray(value, jnp.float32) - b)",
           "sign = jnp.sign(b - jnp.asarray(value, jnp.float32))", TRANSFORM_TESTS),
    Mutant("iflood_no_flooding", "shared/transforms.py",
           "return jnp.abs(per_example_losses - b) + b", "return (per_example_losses - b) + b", TRANSFORM_TESTS),
    Mutant("gnp_hessian_term_halved", "shared/transforms.py",
           "grads = jax.tree.map(lambda a, b: a + eps * b, g, hg)",
           "grads = jax.tree.map(lambda a, b: a + 0.5 * eps * b, g, hg)", TRANSFORM_TESTS),
    Mutant("weissi_log_norm_as_norm", "shared/transforms.py",
           "total = total + lambda1 * jnp.log(norm)", "total = total + lambda1 * norm", TRANSFORM_TESTS),
    Mutant("decoupled_weissi_over_norm_not_squared", "shared/transforms.py",
           "sq = jnp.sum(jnp.square(pf))", "sq = jnp.sqrt(jnp.sum(jnp.square(pf)))", TRANSFORM_TESTS),
    # ---------------------------------------------------------------- shared/hvae.py (NVAE's flows use it)
    Mutant("flow_log_q_at_post_flow_z", "shared/hvae.py",
           "log_q, log_p = q.log_prob(z0) - log_det, p.log_prob(z)",
           "log_q, log_p = q.log_prob(z) - log_det, p.log_prob(z)", HVAE_TESTS + ("tests/test_nvae_flows.py",)),
    Mutant("flow_log_det_sign_flipped", "shared/hvae.py",
           "log_q, log_p = q.log_prob(z0) - log_det, p.log_prob(z)",
           "log_q, log_p = q.log_prob(z0) + log_det, p.log_prob(z)", HVAE_TESTS + ("tests/test_nvae_flows.py",)),
    Mutant("residual_kl_log_term_dropped", "shared/hvae.py",
           "+ r2 - 1.0 - jnp.log(r2))", "+ r2 - 1.0)", HVAE_TESTS),
    Mutant("iw_bound_without_log_k", "shared/hvae.py",
           "return jax.nn.logsumexp(log_weights, axis=0) - math.log(k)",
           "return jax.nn.logsumexp(log_weights, axis=0)", HVAE_TESTS),
    # ---------------------------------------------------------------- shared/train.py: make_step
    Mutant("step_guard_ignores_gradients", "shared/train.py",
           "finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)", "finite = jnp.isfinite(loss)", TRAIN_TESTS),
    Mutant("step_key_not_folded_with_step", "shared/train.py",
           "rng = jax.random.fold_in(state.rng, state.step)", "rng = state.rng", TRAIN_TESTS),
    Mutant("step_skip_takes_the_new_model_state", "shared/train.py",
           "del grads, new_model_state\n            return params, opt_state, old_model_state,",
           "del grads, old_model_state\n            return params, opt_state, new_model_state,", TRAIN_TESTS),
    Mutant("step_update_norm_is_grad_norm", "shared/train.py",
           'global_norm(updates, concat_norms))', 'global_norm(grads, concat_norms))',
           TRAIN_TESTS),
    # ---------------------------------------------------------------- mwp/expressions.py
    Mutant("expr_zero_division_unguarded", "mwp/expressions.py",
           "elif rhs == 0:\n                raise ExpressionError",
           "elif rhs is None:\n                raise ExpressionError", EXPR_TESTS),
    Mutant("brackets_removed_when_value_changes", "mwp/expressions.py",
           'if answers_equal(safe_eval("".join(trial)), target):', 'if safe_eval("".join(trial)) is not None:',
           EXPR_TESTS),
    # ---------------------------------------------------------------- the feature mutants of issue 31
    Mutant("random_crop_identity", "shared/augment.py",
           "offsets = jax.random.randint(rng, (batch, 2), 0, 2 * pad + 1)",
           "offsets = jnp.full((batch, 2), pad)", ("tests/test_shared_models.py",)),
    Mutant("synthetic_labels_never_flipped", "flooding/datasets.py",
           "y = flip_labels(rng, y, label_noise)", "y = y", ("tests/test_flooding_datasets.py",)),
    Mutant("weissi_regularisers_plain_adam", "weissi/digits.py",
           'if method == "none":\n        return adam, zero',
           'if method in ("none", "weight_decay", "adamw", "weissi", "decoupled_weissi"):\n        return adam, zero',
           ("tests/test_weissi_digits.py",)),
    Mutant("sam_as_plain_sgd", "flooding/digits.py",
           "return optax.contrib.sam(sgd, optax.chain(optax.contrib.normalize(), optax.sgd(rho)), sync_period=2)",
           "return sgd", ("tests/test_flooding_digits.py",)),
)


def _copy_tree(dest: Path) -> None:
    """The working tree as it is now (tracked and untracked, not ignored files) copied under dest."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def _pytest(copy: Path, tests: tuple[str, ...], timeout: int) -> tuple[str, float]:
    """'pass' / 'fail' / 'timeout' of `pytest -x -n 0 tests` run in the copy, and its wall time."""
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", *tests, "-q", "-x", "-n", "0", "-p", "no:cacheprovider"],
                              cwd=copy, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - start
    return ("pass" if proc.returncode == 0 else "fail"), time.perf_counter() - start


def _applies(text: str, mutant: Mutant) -> bool:
    return text.count(mutant.old) == 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="mutant names to run (default: all)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per pytest run")
    parser.add_argument("--list", action="store_true", help="list the mutants and whether each applies")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated runs")
    parser.add_argument("--tests-from", metavar="COMMIT", help="run the test files as they were at COMMIT")
    args = parser.parse_args(argv)
    unknown = set(args.only or ()) - {m.name for m in MUTANTS}
    if unknown:
        parser.error(f"--only: unknown mutant(s) {sorted(unknown)}")
    mutants = [m for m in MUTANTS if not args.only or m.name in args.only]
    if args.list:
        for m in mutants:
            state = "applies" if _applies((ROOT / m.path).read_text(), m) else "STALE"
            print(f"{m.name:42s} {m.path:24s} {state}")
        return 0
    copy = Path(tempfile.mkdtemp(prefix="kexue-mutants-"))
    try:
        _copy_tree(copy)
        if args.tests_from:
            for test in {t for m in mutants for t in m.tests}:
                old = subprocess.run(["git", "show", f"{args.tests_from}:{test}"], cwd=ROOT, check=True,
                                     capture_output=True).stdout
                (copy / test).write_bytes(old)
        where = subprocess.run([sys.executable, "-c", "import shared; print(shared.__file__)"], cwd=copy,
                               capture_output=True, text=True, check=True).stdout.strip()
        if not where.startswith(str(copy)):
            raise SystemExit(f"the copy at {copy} imports shared from {where}: mutants would not be tested")
        baseline = {}
        if not args.no_baseline:
            for tests in dict.fromkeys(m.tests for m in mutants):
                baseline[tests], secs = _pytest(copy, tests, args.timeout)
                print(f"baseline {' '.join(tests)}: {baseline[tests]} ({secs:.0f} s)", flush=True)
        rows = []
        for m in mutants:
            target = copy / m.path
            original = target.read_text()
            if not _applies(original, m):
                rows.append((m, "stale", 0.0))
            elif baseline.get(m.tests, "pass") != "pass":
                rows.append((m, "invalid (baseline fails)", 0.0))
            else:
                target.write_text(original.replace(m.old, m.new))
                try:
                    outcome, secs = _pytest(copy, m.tests, args.timeout)
                finally:
                    target.write_text(original)
                rows.append((m, {"fail": "caught", "pass": "SURVIVED", "timeout": "timeout"}[outcome], secs))
            print(f"{m.name:42s} {rows[-1][1]:10s} {rows[-1][2]:6.0f} s", flush=True)
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    caught = sum(r[1] == "caught" for r in rows)
    applicable = sum(r[1] in ("caught", "SURVIVED", "timeout") for r in rows)
    print("\n| mutant | module | result | seconds |\n|---|---|---|---|")
    for m, result, secs in rows:
        print(f"| {m.name} | {m.path} | {result} | {secs:.0f} |")
    print(f"\n{caught} of {applicable} applicable mutants caught "
          f"({len(rows) - applicable} stale or invalid).")
    return 0 if caught == applicable else 1


if __name__ == "__main__":
    sys.exit(main())
