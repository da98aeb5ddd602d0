"""Paired statistics for comparing two methods scored on the same test examples.

Definitions (docs/report.md explains them with worked examples):
  paired difference  statistic(A) - statistic(B), both computed on the same test examples.
  paired bootstrap   each resample draws n test examples with replacement, the SAME indices for
                     both methods (Koehn 2004), and recomputes the difference; the example-to-example
                     variation that both methods share cancels, which is where the power comes from.
  two-level          with several training seeds per method, each resample also draws, independently
                     per method, that method's seeds with replacement; the statistic is the mean over
                     the drawn seeds of the per-seed statistic on the drawn examples.
  corpus statistic   a metric that is not a mean of per-example values (corpus BLEU) is computed from
                     per-example sufficient statistics: `statistic` maps their sum over the drawn
                     examples, shape (..., k), to the metric, shape (...).
  interval           percentile interval of the resampled differences at level 1 - alpha.
  p-value            two-sided, by inverting the percentile interval: twice the share of resampled
                     differences on the far side of 0 (with a +1 correction), capped at 1. So
                     p <= alpha exactly when the 1 - alpha interval excludes 0, up to that correction.
  se                 standard deviation of the resampled differences.
  Holm               step-down adjusted p-values over a family of m comparisons; intervals of the family
                     are Bonferroni intervals at level 1 - alpha/m (see `simultaneous_alpha`).
  MDE                smallest true difference that the family's interval would exclude 0 for with
                     probability `power`: (z_{1 - alpha/(2m)} + z_power) * se (normal approximation).
  precision reached  the interval's half-width.
Verdicts (`superiority`, `non_inferiority`, `equivalence`) are pure functions of an interval, a margin
and the metric's direction, so a caller cannot get the sign of a loss wrong.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Callable, Mapping, Sequence

import numpy as np

from daug.scoring import bootstrap_weights

SUPPORTED, CONTRADICTED, INCONCLUSIVE, EQUIVALENT = "supported", "contradicted", "inconclusive", "equivalent"

# A corpus statistic: summed per-example statistics (..., k) -> metric (...), vectorised.
Statistic = Callable[[np.ndarray], np.ndarray]

_SEED_STREAM = 1  # seeds are drawn from a stream separate from the example draws (see two_level_bootstrap)


# --- bootstrap -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class BootstrapDifference:
    """The observed statistics of A and B and the resampled differences A - B."""

    a: float             # statistic of A on all test examples (mean over A's seeds)
    b: float
    samples: np.ndarray  # (n_resamples,) resampled differences A - B
    n: int               # test examples
    n_seeds_a: int
    n_seeds_b: int

    @property
    def diff(self) -> float:
        return self.a - self.b

    @property
    def se(self) -> float:
        """Bootstrap standard error of the difference."""
        return float(np.std(self.samples, ddof=1)) if len(self.samples) > 1 else 0.0

    def interval(self, alpha: float = 0.05) -> tuple[float, float]:
        """Percentile interval at level 1 - alpha."""
        low, high = np.percentile(self.samples, [100 * alpha / 2, 100 * (1 - alpha / 2)])
        return float(low), float(high)

    @property
    def p_value(self) -> float:
        """Two-sided p-value: 2 * (1 + resamples on the far side of 0) / (1 + resamples), capped at 1."""
        far = min(np.sum(self.samples <= 0), np.sum(self.samples >= 0))
        return float(min(1.0, 2 * (1 + far) / (1 + len(self.samples))))


def _per_seed(x, name: str, corpus: bool) -> np.ndarray:
    """`x` as (seeds, examples, k): k = 1 for per-example values, the statistics' width for a corpus metric."""
    x = np.asarray(x)
    want = 3 if corpus else 2
    if x.ndim != want or 0 in x.shape:
        shape = "(seeds, examples, k)" if corpus else "(seeds, examples)"
        raise ValueError(f"{name}: expected a non-empty array of shape {shape}, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: values must be finite numbers")
    return x if corpus else x[:, :, None].astype(float)


def two_level_bootstrap(a, b, *, n_resamples: int, seed: int, statistic: Statistic | None = None) -> BootstrapDifference:
    """Paired over examples, independent over each method's training seeds.

    a: (seeds_a, n) per-example values, or (seeds_a, n, k) per-example statistics with `statistic`
    mapping their sum over examples (..., k) to the metric (...). b likewise, same n, same example
    order. Without `statistic` the metric is the mean over examples. Each resample draws n example
    indices (shared by A and B: the same draws as `daug.scoring.bootstrap_weights(n, n_resamples,
    seed)`, i.e. as the score CIs) and, for each method, its seeds with replacement.

    With few seeds the seed level is a rough estimate: a bootstrap over s seeds has (s-1)/s of the
    variance of the seed mean (half with 2 seeds), so more seeds give a more honest interval.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    corpus = statistic is not None
    a, b = _per_seed(a, "a", corpus), _per_seed(b, "b", corpus)
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"a and b must score the same examples: shapes {a.shape} and {b.shape}")
    n = a.shape[1]
    stat = statistic or (lambda summed: summed[..., 0] / n)
    counts = bootstrap_weights(n, n_resamples, seed)  # (R, n) times each example is drawn
    seed_rng = np.random.default_rng([seed, _SEED_STREAM])

    def resampled(x: np.ndarray) -> tuple[float, np.ndarray]:
        seeds, _, k = x.shape
        weights = counts if np.issubdtype(x.dtype, np.integer) else counts.astype(float)  # exact integer sums
        summed = (weights @ x.transpose(1, 0, 2).reshape(n, seeds * k)).reshape(n_resamples, seeds, k)
        per_seed = np.asarray(stat(summed), dtype=float)  # (R, seeds)
        if per_seed.shape != (n_resamples, seeds):
            raise ValueError(f"statistic must map summed statistics (..., k) to (...); got shape {per_seed.shape}")
        drawn = seed_rng.integers(0, seeds, size=(n_resamples, seeds))
        observed = float(np.mean(stat(x.sum(axis=1))))
        return observed, np.take_along_axis(per_seed, drawn, axis=1).mean(axis=1)

    obs_a, samples_a = resampled(a)
    obs_b, samples_b = resampled(b)
    return BootstrapDifference(obs_a, obs_b, samples_a - samples_b, n, a.shape[0], b.shape[0])


def paired_bootstrap(a, b, *, n_resamples: int, seed: int, statistic: Statistic | None = None) -> BootstrapDifference:
    """The paired bootstrap of one run each: a, b are (n,) per-example values or (n, k) statistics.

    Exactly `two_level_bootstrap` with one seed per method (the seed level then draws nothing).
    """
    return two_level_bootstrap(np.asarray(a)[None], np.asarray(b)[None], n_resamples=n_resamples, seed=seed,
                               statistic=statistic)


def rowwise(scalar: Callable[[np.ndarray], float]) -> Statistic:
    """A vectorised `Statistic` from a function of one summed-statistics vector (k,), e.g. corpus BLEU."""
    return lambda summed: np.apply_along_axis(scalar, -1, summed)


# --- seed-paired inference with a pooled seed variance (issue 21) -------------------------------------

@dataclass(frozen=True)
class SeedPairedDifference:
    """One comparison X - Y of two methods scored on the same test examples by the same training seeds.

    `diff` is the mean over seeds of the per-seed mean paired difference. Its variance has two parts:
    the seeds' (`seed_var / n_seeds`; `seed_var` is the variance of one seed's mean difference,
    2 x the method x seed interaction variance pooled over every method of the dataset, `df_seed`
    degrees of freedom) and the test examples' (`example_var / n_examples`, from the seed-averaged
    per-example differences, n - 1 df; it also holds the seed x example noise once more, so the sum
    is slightly conservative). `df` combines them (Welch-Satterthwaite); intervals are t intervals."""

    diff: float
    se: float
    df: float
    seed_var: float
    example_var: float
    df_seed: int
    n_seeds: int
    n_examples: int
    a: float = math.nan  # X's mean over seeds and examples
    b: float = math.nan

    @property
    def n(self) -> int:
        return self.n_examples

    @property
    def n_seeds_a(self) -> int:
        return self.n_seeds

    @property
    def n_seeds_b(self) -> int:
        return self.n_seeds

    def interval(self, alpha: float) -> tuple[float, float]:
        from scipy.stats import t

        half = float(t.ppf(1 - alpha / 2, self.df)) * self.se
        return self.diff - half, self.diff + half

    @property
    def p_value(self) -> float:
        from scipy.stats import t

        if self.se == 0:
            return 1.0 if self.diff == 0 else 0.0
        return float(2 * t.sf(abs(self.diff) / self.se, self.df))


def _welch(seed_part: float, example_part: float, df_seed: float, n_examples: int) -> tuple[float, float]:
    """(SE, Welch-Satterthwaite df) of a variance made of a seed part on `df_seed` degrees of freedom
    and an example part on n_examples - 1."""
    total = seed_part + example_part
    if total <= 0:
        return 0.0, float(df_seed)
    return math.sqrt(total), total ** 2 / (seed_part ** 2 / df_seed + example_part ** 2 / (n_examples - 1))


def _seed_matrices(values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    out, shape = {}, None
    for name, v in values.items():
        v = np.asarray(v, dtype=float)
        if v.ndim != 2 or v.shape[0] < 2 or v.shape[1] < 2:
            raise ValueError(f"{name}: expected (seeds >= 2, examples >= 2), got shape {v.shape}")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{name}: values must be finite numbers")
        if shape is not None and v.shape != shape:
            raise ValueError(f"{name}: shape {v.shape}, others {shape}: the same seeds and examples")
        out[name], shape = v, v.shape
    return out


def interaction_variance(values: Mapping[str, np.ndarray]) -> tuple[float, int]:
    """(method x seed interaction variance of the per-seed mean values, its degrees of freedom): the
    residual mean square of a two-way (method, seed) layout of the per-seed means, pooled over every
    method. A seed's block effect (what it does to every method alike) is removed, as pairing does."""
    means = np.stack([v.mean(axis=1) for v in _seed_matrices(values).values()])  # (methods, seeds)
    methods, seeds = means.shape
    if methods < 2:
        raise ValueError("the seed variance is pooled over the methods of a dataset: give at least 2")
    resid = means - means.mean(axis=1, keepdims=True) - means.mean(axis=0, keepdims=True) + means.mean()
    df = (methods - 1) * (seeds - 1)
    return float((resid ** 2).sum() / df), df


def seed_paired(values: Mapping[str, np.ndarray], pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], SeedPairedDifference]:
    """Seed-paired differences X - Y for each (X, Y) of `pairs`. `values`: every method of one dataset,
    arrays (seeds, examples) of per-example values, row k from training seed k (the same initialisation
    and data order in every method), columns the same test examples. The seed is a block: each
    difference is paired on it. The seed part of the variance is the method x seed interaction pooled
    over all methods of `values` ((methods - 1) x (seeds - 1) df; `interaction_variance`), so it does
    not rest on one comparison's seeds - 1 df; the example part is each comparison's own."""
    values = _seed_matrices(values)
    interaction, df_seed = interaction_variance(values)
    seed_var = 2 * interaction  # of one seed's mean difference X - Y (independent interactions)
    out = {}
    for x, y in pairs:
        for name in (x, y):
            if name not in values:
                raise ValueError(f"{name}: not among the methods given ({', '.join(values)})")
        d = values[x] - values[y]
        n_seeds, n = d.shape
        example_var = float(d.mean(axis=0).var(ddof=1))
        se, df = _welch(seed_var / n_seeds, example_var / n, df_seed, n)
        out[(x, y)] = SeedPairedDifference(float(d.mean()), se, df, seed_var, example_var, df_seed, n_seeds, n,
                                           float(values[x].mean()), float(values[y].mean()))
    return out


def seed_mean(x: np.ndarray, pool: Mapping[str, np.ndarray] | None = None) -> SeedPairedDifference:
    """One method's mean of per-example values (seeds, examples) against 0, e.g. a validation-loss rise.
    The seed part of the variance is the variance of the per-seed means: its own (seeds - 1 df), or,
    with `pool` (every method of the dataset, `x` among them), the within-method variance pooled over
    them (methods x (seeds - 1) df; the same assumption as `seed_paired`: one seed variance per
    dataset). The example part comes from the seed-averaged per-example values."""
    v = _seed_matrices({"x": x})["x"]
    n_seeds, n = v.shape
    groups = list(_seed_matrices(pool).values()) if pool else [v]
    df_seed = sum(g.shape[0] - 1 for g in groups)
    seed_var = sum(float(((g.mean(axis=1) - g.mean()) ** 2).sum()) for g in groups) / df_seed
    example_var = float(v.mean(axis=0).var(ddof=1))
    se, df = _welch(seed_var / n_seeds, example_var / n, df_seed, n)
    return SeedPairedDifference(float(v.mean()), se, df, seed_var, example_var, df_seed, n_seeds, n, float(v.mean()), 0.0)


def example_mean_interval(v, alpha: float = 0.05) -> tuple[float, float]:
    """The t interval of the mean of per-example values `v` from ONE seed: it covers the examples
    only (a single seed cannot show the seed variance; `seed_mean` takes two or more)."""
    from scipy.stats import t

    v = np.asarray(v, dtype=float)
    half = float(t.ppf(1 - alpha / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return float(v.mean() - half), float(v.mean() + half)


def seed_paired_family(x: Mapping[str, np.ndarray], reference: np.ndarray) -> dict[str, SeedPairedDifference]:
    """`seed_paired` of every entry of `x` against `reference` (e.g. each method minus `none`), the
    seed variance pooled over all of them and the reference."""
    ref = "\0reference"
    pairs = seed_paired({**x, ref: reference}, [(name, ref) for name in x])
    return {name: pairs[(name, ref)] for name in x}


def seeds_needed(seed_sd: float, example_sd: float, n_examples: int, n_comparisons: int, half_width: float,
                 alpha: float = 0.05, max_seeds: int = 64, noise_sd: float = 0.0, assurance: float = 0.5) -> int:
    """The fewest training seeds whose seed-paired interval (`seed_paired`, at level 1 - alpha) has a
    half-width <= `half_width`, given the SD of one seed's mean difference (`seed_sd`), the example SD
    of the per-example differences (`example_sd`) and their seed x example noise (`noise_sd`, which
    averages over seeds), the test examples, and the comparisons whose methods pool the seed variance
    (methods - 1: df = n_comparisons x (seeds - 1)). `assurance`: the probability that the half-width
    reached is within the target, since the pooled seed variance is itself an estimate (0.5: the
    typical run; 0.9: nine runs in ten)."""
    from scipy.stats import chi2, t

    for k in range(2, max_seeds + 1):
        df_seed = n_comparisons * (k - 1)
        se, df = _welch(seed_sd ** 2 * float(chi2.ppf(assurance, df_seed)) / df_seed / k,
                        (example_sd ** 2 + noise_sd ** 2 / k) / n_examples, df_seed, n_examples)
        if float(t.ppf(1 - alpha / 2, df)) * se <= half_width:
            return k
    raise ValueError(f"more than {max_seeds} seeds needed for a half-width of {half_width}")


# --- multiple comparisons and power --------------------------------------------------------------

def holm(pvalues) -> np.ndarray:
    """Holm step-down adjusted p-values, in the input order.

    Sorted ascending p_(1) <= ... <= p_(m): adjusted p_(i) = max over j <= i of min(1, (m - j + 1) p_(j)).
    Rejecting where adjusted p <= alpha controls the family-wise error rate at alpha.
    """
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1 or np.any((p < 0) | (p > 1)) or np.any(np.isnan(p)):
        raise ValueError(f"p-values must be a 1-D sequence of numbers in [0, 1], got {pvalues!r}")
    m = len(p)
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(stepped)
    return adjusted


def simultaneous_alpha(alpha: float, n_comparisons: int) -> float:
    """Per-interval alpha for a family of m comparisons: alpha / m (Bonferroni).

    The m intervals then hold simultaneously with probability >= 1 - alpha. It is conservative and
    matches Holm's first (strictest) step; Holm-adjusted p-values can reject a few comparisons whose
    Bonferroni interval still touches 0, and verdicts follow the interval (the stricter of the two).
    """
    if n_comparisons < 1:
        raise ValueError(f"n_comparisons must be >= 1, got {n_comparisons}")
    return alpha / n_comparisons


def minimum_detectable_effect(se: float, alpha: float = 0.05, power: float = 0.8, n_comparisons: int = 1,
                              df: float | None = None) -> float:
    """(z_{1 - alpha/(2m)} + z_power) * se: the true difference detected with probability `power`
    (t quantiles on `df` degrees of freedom when the interval is a t interval)."""
    if df is not None:
        from scipy.stats import t

        return (float(t.ppf(1 - simultaneous_alpha(alpha, n_comparisons) / 2, df)) + float(t.ppf(power, df))) * se
    z = NormalDist().inv_cdf
    return (z(1 - simultaneous_alpha(alpha, n_comparisons) / 2) + z(power)) * se


@dataclass(frozen=True)
class Comparison:
    """One paired comparison A - B, with its interval at `level` (corrected within its family)."""

    a: float
    b: float
    diff: float
    ci_low: float
    ci_high: float
    level: float    # confidence level of [ci_low, ci_high]: 1 - alpha/m
    p: float        # unadjusted two-sided bootstrap p-value
    p_holm: float   # Holm-adjusted within the family
    se: float
    mde: float      # minimum detectable effect at the family's level and the given power
    n: int
    n_seeds_a: int
    n_seeds_b: int

    @property
    def half_width(self) -> float:
        """Precision reached: half the interval's width."""
        return (self.ci_high - self.ci_low) / 2

    def to_dict(self) -> dict:
        return {**asdict(self), "half_width": self.half_width}


def compare_family(family: Mapping[str, BootstrapDifference | SeedPairedDifference], alpha: float = 0.05,
                   power: float = 0.8) -> dict[str, Comparison]:
    """Comparisons of a family (e.g. one claim, or the metrics of `daug compare`), corrected together:
    Holm-adjusted p-values, Bonferroni intervals at 1 - alpha/m, MDE at the same level."""
    if not family:
        return {}
    m = len(family)
    level_alpha = simultaneous_alpha(alpha, m)
    p_holm = holm([d.p_value for d in family.values()])
    out = {}
    for (name, d), adjusted in zip(family.items(), p_holm):
        low, high = d.interval(level_alpha)
        mde = minimum_detectable_effect(d.se, alpha, power, m, getattr(d, "df", None))  # t quantiles for a t interval
        out[name] = Comparison(d.a, d.b, d.diff, low, high, 1 - level_alpha, d.p_value, float(adjusted), d.se, mde,
                               d.n, d.n_seeds_a, d.n_seeds_b)
    return out


# --- verdicts ------------------------------------------------------------------------------------

def oriented(ci_low: float, ci_high: float, *, higher_is_better: bool) -> tuple[float, float]:
    """The interval of X - Y turned into "how much better X is than Y" (negated when lower is better)."""
    return (ci_low, ci_high) if higher_is_better else (-ci_high, -ci_low)


def _check_margin(margin: float) -> None:
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0, got {margin!r}")


def superiority(ci_low: float, ci_high: float, *, higher_is_better: bool, margin: float | None = None) -> str:
    """ "X > Y" from the corrected interval of X - Y: supported when X is better over the whole interval,
    contradicted when worse over the whole interval; otherwise equivalent when a margin is given and the
    interval lies within (-margin, +margin), else inconclusive."""
    low, high = oriented(ci_low, ci_high, higher_is_better=higher_is_better)
    if low > 0:
        return SUPPORTED
    if high < 0:
        return CONTRADICTED
    if margin is not None and equivalence(low, high, margin=margin) == EQUIVALENT:
        return EQUIVALENT
    return INCONCLUSIVE


def non_inferiority(ci_low: float, ci_high: float, *, margin: float, higher_is_better: bool) -> str:
    """ "X >= Y" with margin m: supported when X is worse by less than m over the whole interval
    (oriented lower bound > -m), contradicted when X is worse by more than m over the whole interval
    (oriented upper bound < -m), else inconclusive."""
    _check_margin(margin)
    low, high = oriented(ci_low, ci_high, higher_is_better=higher_is_better)
    if low > -margin:
        return SUPPORTED
    if high < -margin:
        return CONTRADICTED
    return INCONCLUSIVE


def equivalence(ci_low: float, ci_high: float, *, margin: float) -> str:
    """ "X ~ Y" with margin m: equivalent when the interval lies within (-m, +m), contradicted when it
    lies wholly outside it (|X - Y| >= m), else inconclusive. Symmetric, so direction does not matter."""
    _check_margin(margin)
    if -margin < ci_low and ci_high < margin:
        return EQUIVALENT
    if ci_low >= margin or ci_high <= -margin:
        return CONTRADICTED
    return INCONCLUSIVE


def verdict(relation: str, ci_low: float, ci_high: float, *, higher_is_better: bool,
            margin: float | None = None) -> str:
    """The verdict on "X relation Y" (relation ">", ">=" or "~") from the corrected interval of X - Y."""
    if relation == ">":
        return superiority(ci_low, ci_high, higher_is_better=higher_is_better, margin=margin)
    if relation in (">=", "~") and margin is None:
        raise ValueError(f"relation {relation!r} needs a margin")
    if relation == ">=":
        return non_inferiority(ci_low, ci_high, margin=margin, higher_is_better=higher_is_better)
    if relation == "~":
        return equivalence(ci_low, ci_high, margin=margin)
    raise ValueError(f"unknown relation {relation!r}; known: >, >=, ~")
