"""The canary's statistics under repeated looks: false promotions, labels to a verdict, coverage.

Simulates many canaries at once (vectorised numpy, no gateway): labelled rows arrive in looks (the canary
flow judging every ``--look-every`` labelled rows, up to ``--cap`` labels); each row is the canary's with
probability ``share`` and scores 1 when the answer was right (production accuracy ``p``, the canary's
``p + effect``). Every look applies the verdict's own label rule
(:func:`flows.delivery.verdict.label_decision` on :func:`flows.delivery.sequential.difference_bounds`) with
the policy's defaults (alpha 0.05, margin 0,
min_labels 100 a side, planned_labels 2,000), and stops at the first verdict.

Printed:

(a) equal models (effect 0, margin 0): how often the canary is ever promoted, and ever rolled back, over all
    looks; next to the baseline measured in the same run, a fixed-sample z-test (a 95% Welch interval) read
    at every look with the same min_labels, and the same z-test read once at the cap (no peeking). Also the
    sequence's time-uniform miscoverage (the true difference outside it at any look) on 0/1 scores and on a
    skewed continuous score (minus a squared N(0, 1) error: chi-squared, long right tail);
(b) labels to a verdict at effects +0.02, +0.05 and -0.05 around p = 0.80, with share 0.1 and 0.5: how many
    runs reached one (and the right one), then the median and 90th percentile of labelled rows per side and
    in total (">cap" where fewer runs than that percentile had a verdict by the cap);
(c) wall time and peak RSS (``ru_maxrss``).

Run: ``.venv/bin/python bench/bench_canary.py`` (10,000 runs a setting, looks every 100 labels up to 20,000;
about 15 s and 560 MB on 2 cores) or ``--quick`` (1,000 runs, up to 10,000 labels; about 1 s).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flows.delivery.policy import CanaryPolicy  # noqa: E402
from flows.delivery.sequential import difference_bounds  # noqa: E402
from flows.delivery.verdict import label_decision  # noqa: E402

Z_95 = 1.959963984540054


def bernoulli_looks(rng: np.random.Generator, runs: int, looks: int, look_every: int, share: float,
                    p_production: float, p_canary: float) -> dict[str, np.ndarray]:
    """Per run and look, each arm's labelled rows, mean and ddof=1 variance of 0/1 scores so far."""
    n_c = np.cumsum(rng.binomial(look_every, share, size=(runs, looks)), axis=1)
    n_p = look_every * np.arange(1, looks + 1)[None, :] - n_c
    added_c = np.diff(n_c, axis=1, prepend=0)
    hits_c = np.cumsum(rng.binomial(added_c, p_canary), axis=1)
    hits_p = np.cumsum(rng.binomial(look_every - added_c, p_production), axis=1)
    out = {"n_c": n_c, "n_p": n_p}
    for side, n, hits in (("c", n_c, hits_c), ("p", n_p, hits_p)):
        with np.errstate(divide="ignore", invalid="ignore"):
            out[f"mean_{side}"] = np.where(n > 0, hits / np.maximum(n, 1), 0.0)
            out[f"var_{side}"] = np.where(n > 1, hits * (n - hits) / (n * np.maximum(n - 1, 1)), 0.0)
    return out


def skewed_looks(rng: np.random.Generator, runs: int, looks: int, look_every: int, share: float
                 ) -> dict[str, np.ndarray]:
    """The same summaries for a skewed score, minus a squared N(0, 1) error, equal on both arms (mean -1)."""
    sums = {k: np.zeros(runs) for k in ("n_c", "s_c", "q_c", "n_p", "s_p", "q_p")}
    out = {k: np.empty((runs, looks)) for k in ("n_c", "n_p", "mean_c", "mean_p", "var_c", "var_p")}
    for look in range(looks):
        canary = rng.random((runs, look_every)) < share
        score = -np.square(rng.standard_normal((runs, look_every)))
        for side, mask in (("c", canary), ("p", ~canary)):
            sums[f"n_{side}"] += mask.sum(axis=1)
            sums[f"s_{side}"] += np.where(mask, score, 0).sum(axis=1)
            sums[f"q_{side}"] += np.where(mask, score * score, 0).sum(axis=1)
            n, s, q = sums[f"n_{side}"], sums[f"s_{side}"], sums[f"q_{side}"]
            out[f"n_{side}"][:, look] = n
            out[f"mean_{side}"][:, look] = s / np.maximum(n, 1)
            ss = q - s * s / np.maximum(n, 1)
            out[f"var_{side}"][:, look] = np.where(n > 1, ss / np.maximum(n - 1, 1), 0.0)
    return out


def sequence(arms: dict[str, np.ndarray], policy: CanaryPolicy) -> tuple[np.ndarray, np.ndarray]:
    estimate, radius = difference_bounds(arms["n_c"], arms["mean_c"], arms["var_c"], arms["n_p"],
                                         arms["mean_p"], arms["var_p"], alpha=policy.alpha,
                                         planned_labels=policy.planned_labels)
    return estimate - radius, estimate + radius


def naive_interval(arms: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The fixed-sample 95% Welch interval: right at one pre-planned look, not at every look."""
    estimate = arms["mean_c"] - arms["mean_p"]
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.sqrt(arms["var_c"] / arms["n_c"] + arms["var_p"] / arms["n_p"])
    se = np.where((arms["n_c"] > 1) & (arms["n_p"] > 1), se, np.inf)
    return estimate - Z_95 * se, estimate + Z_95 * se


def first_verdict(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per run: the index of the first look with a verdict (-1: none by the cap) and that verdict's code."""
    decided = codes != 0
    index = np.where(decided.any(axis=1), decided.argmax(axis=1), -1)
    return index, np.where(index >= 0, codes[np.arange(len(codes)), np.maximum(index, 0)], 0)


def codes_of(lower: np.ndarray, upper: np.ndarray, arms: dict[str, np.ndarray], policy: CanaryPolicy
             ) -> np.ndarray:
    return label_decision(lower, upper, arms["n_c"], arms["n_p"], margin=policy.margin,
                          min_labels=policy.min_labels)


def percentile(values: np.ndarray, decided: np.ndarray, q: float, cap: int) -> str:
    """The q-th percentile over all runs, a run without a verdict counting as more than the cap."""
    censored = np.where(decided, values, np.inf)
    value = np.percentile(censored, q, method="higher")
    return f">{cap:,}" if not np.isfinite(value) else f"{int(value):,}"


def part_a(rng: np.random.Generator, args: argparse.Namespace, policy: CanaryPolicy) -> None:
    looks = args.cap // args.look_every
    se = np.sqrt(0.05 * 0.95 / args.runs)
    print(f"(a) equal models (p = {args.p}, effect 0, margin 0), alpha {policy.alpha}, {args.runs:,} runs, "
          f"a look every {args.look_every} labels up to {args.cap:,} ({looks} looks); Monte Carlo s.e. "
          f"~{se:.3f} at 0.05")
    print(f"    {'share':>5}  {'rule':<44} {'ever promoted':>14} {'ever rolled back':>17}")
    for share in (0.1, 0.5):
        arms = bernoulli_looks(rng, args.runs, looks, args.look_every, share, args.p, args.p)
        rows = [("confidence sequence, every look", sequence(arms, policy)),
                ("fixed-sample z-test (95%), every look", naive_interval(arms))]
        for name, (lower, upper) in rows:
            _, code = first_verdict(codes_of(lower, upper, arms, policy))
            print(f"    {share:>5}  {name:<44} {np.mean(code == 1):>14.3f} {np.mean(code == -1):>17.3f}")
        lower, upper = naive_interval({k: v[:, -1:] for k, v in arms.items()})
        last = codes_of(lower, upper, {k: v[:, -1:] for k, v in arms.items()}, policy)[:, 0]
        print(f"    {share:>5}  {'fixed-sample z-test, once at the cap':<44} {np.mean(last == 1):>14.3f} "
              f"{np.mean(last == -1):>17.3f}")
    print(f"    time-uniform miscoverage of the sequence (the true difference outside it at any look with "
          f">= {policy.min_labels} labels a side), share 0.1:")
    zero_one = bernoulli_looks(rng, args.runs, looks, args.look_every, 0.1, args.p, args.p)
    cases = ((f"0/1 scores, p = {args.p:.2f}", zero_one),
             ("skewed scores, -chi2(1)", skewed_looks(rng, args.runs, looks, args.look_every, 0.1)))
    for name, arms in cases:
        lower, upper = sequence(arms, policy)
        judged = (arms["n_c"] >= policy.min_labels) & (arms["n_p"] >= policy.min_labels)
        missed = (judged & ((lower > 0) | (upper < 0))).any(axis=1)
        print(f"      {name:<26} {missed.mean():.3f} (alpha {policy.alpha})")


def part_b(rng: np.random.Generator, args: argparse.Namespace, policy: CanaryPolicy) -> None:
    looks = args.cap // args.look_every
    print(f"\n(b) labelled rows to a verdict around p = {args.p} (confidence sequence, every look, cap "
          f"{args.cap:,}); median / 90th percentile")
    print(f"    {'effect':>6} {'share':>5} {'verdict':>8} {'right':>6}   {'canary':>17} {'production':>17} "
          f"{'total':>17}")
    for share in (0.1, 0.5):
        for effect in (0.02, 0.05, -0.05):
            arms = bernoulli_looks(rng, args.runs, looks, args.look_every, share, args.p, args.p + effect)
            lower, upper = sequence(arms, policy)
            index, code = first_verdict(codes_of(lower, upper, arms, policy))
            decided = index >= 0
            right = np.mean(code == (1 if effect > 0 else -1))
            at = np.maximum(index, 0)
            runs = np.arange(args.runs)
            n_c, n_p = arms["n_c"][runs, at], arms["n_p"][runs, at]
            cells = [f"{percentile(v, decided, 50, args.cap):>7} / {percentile(v, decided, 90, args.cap):>7}"
                     for v in (n_c, n_p, n_c + n_p)]
            print(f"    {effect:>+6.2f} {share:>5} {decided.mean():>8.1%} {right:>6.1%}   " + " ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000, help="simulated canaries per setting")
    parser.add_argument("--look-every", type=int, default=100, help="labelled rows between two looks")
    parser.add_argument("--cap", type=int, default=20_000, help="labelled rows at which a run gives up")
    parser.add_argument("--p", type=float, default=0.80, help="production's accuracy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="1,000 runs, up to 10,000 labels")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.cap = 1000, 10_000
    policy = CanaryPolicy()
    print(f"policy: alpha {policy.alpha}, margin {policy.margin}, min_labels {policy.min_labels} a side, "
          f"planned_labels {policy.planned_labels:,}\n")
    began = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    part_a(rng, args, policy)
    part_b(rng, args, policy)
    print(f"\n(c) wall time {time.perf_counter() - began:.1f} s, peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
