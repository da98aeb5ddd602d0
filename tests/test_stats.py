"""daug.stats: paired and two-level bootstrap, Holm, MDE, verdict rules."""
from __future__ import annotations

import math

import numpy as np
import pytest

from daug import stats
from daug.stats import CONTRADICTED, EQUIVALENT, INCONCLUSIVE, SUPPORTED


def correlated_pair(rng: np.random.Generator, n: int, delta: float):
    """Per-example scores of two methods on the same examples: a shared, skewed example difficulty
    (most of the variance) plus a per-example effect of mean `delta` and independent noise."""
    difficulty = rng.exponential(1.0, n) * 3
    effect = delta + rng.normal(0, 0.3, n)
    b = difficulty + rng.normal(0, 0.2, n)
    return b + effect, b


def width(d: stats.BootstrapDifference, alpha: float = 0.05) -> float:
    low, high = d.interval(alpha)
    return high - low


# --- paired bootstrap ----------------------------------------------------------------------------

def test_constant_shift_is_recovered_exactly():
    a = np.random.default_rng(1).normal(size=50)
    d = stats.paired_bootstrap(a, a - 0.5, n_resamples=400, seed=0)
    assert d.diff == pytest.approx(0.5)
    assert d.interval() == pytest.approx((0.5, 0.5))
    assert d.se == pytest.approx(0.0, abs=1e-12)
    assert d.p_value == pytest.approx(2 / 401)  # the smallest p-value the +1 correction allows


def test_identical_runs_have_p_one():
    a = np.random.default_rng(2).normal(size=30)
    d = stats.paired_bootstrap(a, a.copy(), n_resamples=200, seed=0)
    assert d.diff == 0 and d.p_value == 1.0


def test_paired_bootstrap_recovers_a_known_difference_and_covers_it_95_percent_of_the_time():
    rng = np.random.default_rng(2024)
    delta, covered, estimates = 0.2, 0, []
    for sim in range(200):
        a, b = correlated_pair(rng, 300, delta)
        d = stats.paired_bootstrap(a, b, n_resamples=500, seed=sim)
        assert d.diff == pytest.approx(a.mean() - b.mean())
        low, high = d.interval(0.05)
        covered += low <= delta <= high
        estimates.append(d.diff)
    assert np.mean(estimates) == pytest.approx(delta, abs=0.01)
    assert 0.90 <= covered / 200 <= 0.99


def test_paired_interval_is_much_narrower_than_unpaired_on_correlated_examples():
    a, b = correlated_pair(np.random.default_rng(7), 300, 0.2)
    paired = stats.paired_bootstrap(a, b, n_resamples=1000, seed=0)
    zeros = np.zeros_like(a)
    # unpaired: A's and B's examples drawn independently (different seeds)
    unpaired = (stats.paired_bootstrap(a, zeros, n_resamples=1000, seed=1).samples
                + stats.paired_bootstrap(zeros, b, n_resamples=1000, seed=2).samples)
    unpaired_width = np.subtract(*np.percentile(unpaired, [97.5, 2.5]))
    assert width(paired) < 0.25 * unpaired_width
    assert paired.interval()[0] > 0  # the paired test sees the 0.2 difference ...
    assert np.percentile(unpaired, 2.5) < 0  # ... the unpaired one does not


def test_p_value_agrees_with_the_interval():
    rng = np.random.default_rng(3)
    for delta in (0.0, 0.03, 0.06, 0.1, 0.3):
        a, b = correlated_pair(rng, 200, delta)
        d = stats.paired_bootstrap(a, b, n_resamples=2000, seed=0)
        low, high = d.interval(0.05)
        excludes_zero = low > 0 or high < 0
        assert (d.p_value < 0.05) == excludes_zero or abs(d.p_value - 0.05) < 0.005


def test_same_seed_same_resamples_different_seed_different():
    a, b = correlated_pair(np.random.default_rng(4), 100, 0.1)
    one = stats.paired_bootstrap(a, b, n_resamples=300, seed=5)
    assert np.array_equal(one.samples, stats.paired_bootstrap(a, b, n_resamples=300, seed=5).samples)
    assert not np.array_equal(one.samples, stats.paired_bootstrap(a, b, n_resamples=300, seed=6).samples)


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="same examples"):
        stats.paired_bootstrap(np.zeros(5), np.zeros(6), n_resamples=10, seed=0)
    with pytest.raises(ValueError, match="finite"):
        stats.paired_bootstrap(np.array([1.0, np.nan]), np.zeros(2), n_resamples=10, seed=0)
    with pytest.raises(ValueError, match="n_resamples"):
        stats.paired_bootstrap(np.zeros(3), np.zeros(3), n_resamples=0, seed=0)


# --- two-level bootstrap -------------------------------------------------------------------------

def test_one_seed_each_is_the_paired_bootstrap():
    a, b = correlated_pair(np.random.default_rng(5), 80, 0.1)
    paired = stats.paired_bootstrap(a, b, n_resamples=300, seed=3)
    two = stats.two_level_bootstrap(a[None], b[None], n_resamples=300, seed=3)
    assert np.array_equal(paired.samples, two.samples)
    assert (two.n_seeds_a, two.n_seeds_b, two.n) == (1, 1, 80)


def test_identical_seeds_add_no_width():
    a, b = correlated_pair(np.random.default_rng(6), 80, 0.1)
    paired = stats.paired_bootstrap(a, b, n_resamples=300, seed=3)
    two = stats.two_level_bootstrap(np.stack([a] * 3), np.stack([b] * 2), n_resamples=300, seed=3)
    assert np.allclose(paired.samples, two.samples)


def test_two_level_bootstrap_widens_the_interval_when_seed_variance_is_large():
    rng = np.random.default_rng(8)
    a, b = correlated_pair(rng, 300, 0.2)
    seed_offsets = rng.normal(0, 1, size=(2, 3, 1))

    def seeded(scale):
        xa = a + scale * seed_offsets[0] + rng.normal(0, 0.1, (3, 300))
        xb = b + scale * seed_offsets[1] + rng.normal(0, 0.1, (3, 300))
        return stats.two_level_bootstrap(xa, xb, n_resamples=1000, seed=0)

    quiet, noisy = seeded(0.01), seeded(1.0)
    assert (noisy.n_seeds_a, noisy.n_seeds_b) == (3, 3)
    assert noisy.diff == pytest.approx(a.mean() - b.mean() + seed_offsets[0].mean() - seed_offsets[1].mean(),
                                       abs=0.02)
    assert width(noisy) > 3 * width(quiet)


# --- corpus statistics ---------------------------------------------------------------------------

def test_corpus_statistic_of_sums_matches_the_mean_path():
    a, b = correlated_pair(np.random.default_rng(9), 60, 0.1)
    ones = np.ones_like(a)
    ratio = lambda summed: summed[..., 0] / summed[..., 1]  # sum of values / number of examples drawn
    corpus = stats.paired_bootstrap(np.c_[a, ones], np.c_[b, ones], n_resamples=300, seed=1, statistic=ratio)
    mean = stats.paired_bootstrap(a, b, n_resamples=300, seed=1)
    assert corpus.diff == pytest.approx(mean.diff)
    assert np.allclose(corpus.samples, mean.samples)


def test_corpus_bleu_is_paired_from_summed_sentence_statistics():
    from daug.scoring import bleu_from_stats, bleu_stats, corpus_bleu

    rng = np.random.default_rng(10)
    alphabet = list("我你他的是了不在有人这中大为上个国和也子时道")
    refs = ["".join(rng.choice(alphabet, 12)) for _ in range(40)]
    noisy = lambda p: ["".join(c if rng.random() > p else rng.choice(alphabet) for c in r) for r in refs]
    good, bad = noisy(0.2), noisy(0.6)
    d = stats.paired_bootstrap(bleu_stats(good, refs), bleu_stats(bad, refs), n_resamples=200, seed=0,
                               statistic=stats.rowwise(bleu_from_stats))
    assert d.a == pytest.approx(corpus_bleu(good, refs))
    assert d.diff == pytest.approx(corpus_bleu(good, refs) - corpus_bleu(bad, refs))
    assert d.interval()[0] > 0


def test_a_statistic_with_the_wrong_shape_is_rejected():
    x = np.ones((5, 2))
    with pytest.raises(ValueError, match="statistic must map"):
        stats.paired_bootstrap(x, x, n_resamples=10, seed=0, statistic=lambda s: s)


# --- Holm, Bonferroni, MDE -----------------------------------------------------------------------

def test_holm_against_a_hand_computed_example():
    # sorted: 0.005 (x4) = 0.02; 0.01 (x3) = 0.03; 0.03 (x2) = 0.06; 0.04 (x1) = 0.04 -> monotone 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert stats.holm([0.2]) == pytest.approx([0.2])
    with pytest.raises(ValueError):
        stats.holm([0.1, 1.5])


def test_simultaneous_alpha_is_bonferroni():
    assert stats.simultaneous_alpha(0.05, 4) == pytest.approx(0.0125)


def test_minimum_detectable_effect_against_a_hand_computation():
    # z_{0.975} = 1.959964, z_{0.8} = 0.841621, z_{1 - 0.05/8} = z_{0.99375} = 2.497705 (normal tables)
    assert stats.minimum_detectable_effect(0.01) == pytest.approx((1.959964 + 0.841621) * 0.01, rel=1e-5)
    assert stats.minimum_detectable_effect(0.01, n_comparisons=4) == pytest.approx((2.497705 + 0.841621) * 0.01,
                                                                                   rel=1e-5)
    assert stats.minimum_detectable_effect(0.02, alpha=0.05, power=0.5) == pytest.approx(1.959964 * 0.02, rel=1e-5)


def test_compare_family_corrects_intervals_p_values_and_mde_together():
    rng = np.random.default_rng(11)
    family = {}
    for name, delta in (("big", 0.5), ("small", 0.05), ("none", 0.0)):
        a, b = correlated_pair(rng, 200, delta)
        family[name] = stats.paired_bootstrap(a, b, n_resamples=1000, seed=0)
    out = stats.compare_family(family, alpha=0.05)
    assert list(out) == ["big", "small", "none"]
    assert [c.p_holm for c in out.values()] == pytest.approx(stats.holm([d.p_value for d in family.values()]))
    for name, c in out.items():
        assert c.level == pytest.approx(1 - 0.05 / 3)
        assert (c.ci_low, c.ci_high) == pytest.approx(family[name].interval(0.05 / 3))
        assert c.mde == pytest.approx(stats.minimum_detectable_effect(c.se, 0.05, 0.8, 3))
        assert c.half_width == pytest.approx((c.ci_high - c.ci_low) / 2)
        assert c.to_dict()["half_width"] == c.half_width and c.to_dict()["p_holm"] == c.p_holm
        corrected, single = width(family[name], 0.05 / 3), width(family[name], 0.05)
        assert corrected > single


# --- verdicts ------------------------------------------------------------------------------------

@pytest.mark.parametrize("interval, up, expected", [
    ((0.1, 0.5), True, SUPPORTED),
    ((-0.5, -0.1), True, CONTRADICTED),
    ((-0.1, 0.5), True, INCONCLUSIVE),
    ((0.0, 0.5), True, INCONCLUSIVE),      # touching 0 is not above 0
    # loss, lower is better: X - Y below 0 means X is better
    ((-0.5, -0.1), False, SUPPORTED),
    ((0.1, 0.5), False, CONTRADICTED),
    ((-0.1, 0.5), False, INCONCLUSIVE),
])
def test_superiority(interval, up, expected):
    assert stats.superiority(*interval, higher_is_better=up) == expected
    assert stats.verdict(">", *interval, higher_is_better=up) == expected


def test_superiority_with_a_margin_can_find_equivalence():
    assert stats.superiority(-0.05, 0.05, higher_is_better=True, margin=0.1) == EQUIVALENT
    assert stats.superiority(-0.05, 0.05, higher_is_better=True) == INCONCLUSIVE
    assert stats.superiority(-0.05, 0.2, higher_is_better=True, margin=0.1) == INCONCLUSIVE
    assert stats.superiority(0.01, 0.02, higher_is_better=True, margin=0.1) == SUPPORTED  # small but real


@pytest.mark.parametrize("interval, up, expected", [
    ((-0.05, 0.2), True, SUPPORTED),       # at worst 0.05 worse: within the 0.1 margin
    ((0.2, 0.4), True, SUPPORTED),
    ((-0.3, -0.15), True, CONTRADICTED),   # worse by more than the margin everywhere
    ((-0.2, 0.1), True, INCONCLUSIVE),
    ((-0.1, 0.1), True, INCONCLUSIVE),     # lower bound exactly -margin is not above it
    # loss: X - Y up to +0.05 means X's loss is at worst 0.05 higher
    ((-0.2, 0.05), False, SUPPORTED),
    ((0.15, 0.3), False, CONTRADICTED),
    ((-0.1, 0.2), False, INCONCLUSIVE),
])
def test_non_inferiority(interval, up, expected):
    assert stats.non_inferiority(*interval, margin=0.1, higher_is_better=up) == expected
    assert stats.verdict(">=", *interval, margin=0.1, higher_is_better=up) == expected


@pytest.mark.parametrize("interval, expected", [
    ((-0.05, 0.05), EQUIVALENT),
    ((-0.09, 0.02), EQUIVALENT),
    ((-0.05, 0.2), INCONCLUSIVE),
    ((-0.1, 0.05), INCONCLUSIVE),  # the bound must lie strictly inside
    ((0.1, 0.3), CONTRADICTED),
    ((-0.4, -0.2), CONTRADICTED),
])
def test_equivalence(interval, expected):
    assert stats.equivalence(*interval, margin=0.1) == expected
    for up in (True, False):  # symmetric: the direction cannot change it
        assert stats.verdict("~", *interval, margin=0.1, higher_is_better=up) == expected


def test_verdict_needs_a_margin_and_a_known_relation():
    with pytest.raises(ValueError, match="margin"):
        stats.verdict(">=", -0.1, 0.1, higher_is_better=True)
    with pytest.raises(ValueError, match="unknown relation"):
        stats.verdict("<", -0.1, 0.1, higher_is_better=True, margin=0.1)
    with pytest.raises(ValueError, match="margin"):
        stats.non_inferiority(-0.1, 0.1, margin=-1, higher_is_better=True)


# --- seed-paired inference with a pooled seed variance -------------------------------------------------

# Variance components measured in the committed cpu run (reports/cpu/eval/*.losses.jsonl, 300 test
# examples, 6 methods - none; Zhen Huan 3 seeds, Paimon 6; `python docs/research/variance_components.py`):
# per-example differences D[s, i] = a_i + b_s + e_si with sigma_a the example effect, sigma_b the seed
# effect of a difference, sigma_e the seed x example noise.
MEASURED = {"zhenhuan": {"a": 0.073, "b": 0.0062, "e": 0.079}, "paimon": {"a": 0.106, "b": 0.0142, "e": 0.120}}
# The components the seeds were designed from, before that run: the earlier 2-seed run's (8 methods - none).
DESIGN = {"zhenhuan": {"a": 0.065, "b": 0.0055, "e": 0.078}, "paimon": {"a": 0.080, "b": 0.026, "e": 0.118}}


def simulate_family(rng, sd: dict, seeds: int, n: int = 300, methods: int = 8, delta: float = 0.0,
                    shared_seed_sd: float = 0.0):
    """Per-example losses of `methods` methods and a reference, under (method - reference) = delta.
    Every method's seed k shares `shared_seed_sd` of seed effect with the reference (a block effect)."""
    base = rng.normal(4.3, 0.5, n)  # example difficulty, shared by every method and seed
    block = rng.normal(0, shared_seed_sd, (seeds, 1)) if shared_seed_sd else 0.0
    reference = base + block + rng.normal(0, 0.01, (seeds, n))
    x = {}
    for m in range(methods):
        a = rng.normal(0, sd["a"], n)
        b = rng.normal(0, sd["b"], (seeds, 1))
        e = rng.normal(0, sd["e"], (seeds, n))
        x[f"m{m}"] = reference + delta + a + b + e
    return x, reference


@pytest.mark.parametrize("dataset", sorted(MEASURED))
@pytest.mark.parametrize("seeds", [2, 3])
def test_seed_paired_intervals_hold_their_level_under_no_difference(dataset, seeds):
    """Under no true difference, with the measured variances: per comparison, the 95% interval
    excludes 0 in at most 5% of comparisons (within Monte Carlo error) and covers the truth in at
    least 95%; Holm over a family of 8 keeps the family-wise rate at 5%."""
    rng = np.random.default_rng(21)
    reps, alpha = 1500, 0.05
    rejections = families = 0
    for _ in range(reps):
        x, ref = simulate_family(rng, MEASURED[dataset], seeds)
        fam = stats.seed_paired_family(x, ref)
        p = np.array([d.p_value for d in fam.values()])
        rejections += int((p <= alpha).sum())
        families += int((stats.holm(p) <= alpha).any())
    rate, mc = rejections / (reps * 8), 3 * math.sqrt(alpha * (1 - alpha) / (reps * 8))
    assert rate <= alpha + mc, rate               # the false-positive rate holds its level
    assert 1 - rate >= 1 - alpha - mc              # coverage of the true 0
    assert families / reps <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / reps), families / reps


def test_seed_paired_intervals_cover_a_true_difference_and_not_too_widely():
    rng = np.random.default_rng(5)
    covered, widths = 0, []
    for _ in range(800):
        x, ref = simulate_family(rng, MEASURED["paimon"], 3, delta=0.04)
        d = stats.seed_paired_family(x, ref)["m0"]
        low, high = d.interval(0.05)
        covered += low <= 0.04 <= high
        widths.append((high - low) / 2)
    assert covered / 800 >= 0.95 - 3 * math.sqrt(0.05 * 0.95 / 800)
    assert np.mean(widths) < 0.06  # pooled df: no wider than a t interval with 16 df needs


def test_pairing_by_seed_removes_a_shared_seed_effect():
    """A seed that moves every method alike (same initialisation and data order) is a block effect:
    paired on the seed it cancels, so the interval is the same with or without it; an analysis that
    does not pair seeds would see it as noise."""
    rng = np.random.default_rng(0)
    x, ref = simulate_family(rng, {"a": 0.05, "b": 0.005, "e": 0.05}, 3)
    shift = np.array([[0.3], [-0.2], [0.1]])  # a large effect of each seed on every method
    plain = stats.seed_paired_family(x, ref)["m0"]
    shifted = stats.seed_paired_family({k: v + shift for k, v in x.items()}, ref + shift)["m0"]
    assert shifted.interval(0.05) == pytest.approx(plain.interval(0.05), abs=1e-12)
    unpaired_se = math.sqrt((x["m0"] + shift).mean(axis=1).var(ddof=1) / 3 + (ref + shift).mean(axis=1).var(ddof=1) / 3)
    assert unpaired_se > 10 * plain.se
    assert plain.df_seed == 8 * 2 and plain.n_seeds == 3 and plain.n_examples == 300


def test_seeds_needed_for_the_precision_target_follows_the_measured_variances():
    """The design calculation of docs/report.md: Paimon's seed SD needs more seeds than Zhen Huan's."""
    zh, pm = DESIGN["zhenhuan"], DESIGN["paimon"]
    example_sd = {k: math.sqrt(v["a"] ** 2 + v["e"] ** 2 / 2) for k, v in DESIGN.items()}
    k_zh = stats.seeds_needed(zh["b"], example_sd["zhenhuan"], 300, 8, 0.03)
    k_pm = stats.seeds_needed(pm["b"], example_sd["paimon"], 300, 8, 0.03)
    assert k_zh == 2 and 4 <= k_pm <= 6 and k_pm > k_zh
    with pytest.raises(ValueError, match="more than 3 seeds"):
        stats.seeds_needed(0.2, 0.1, 300, 8, 0.01, max_seeds=3)


# --- the claims' procedure: every method with its own seed noise, one family of distinct comparisons -----

def simulate_methods(rng, sd: dict, seeds: int, methods: int = 9, n: int = 300, shared_seed_sd: float = 0.05):
    """Per-example losses of `methods` methods with no true difference between any two. `sd` holds the
    measured components of a DIFFERENCE of two methods (a: example, b: seed, e: seed x example); each
    method carries half of each variance, independently, so any difference has the measured ones. A
    seed also moves every method alike (`shared_seed_sd`: the block that pairing removes)."""
    half = {k: v / math.sqrt(2) for k, v in sd.items()}
    difficulty = rng.normal(4.3, 0.5, n)
    block = rng.normal(0, shared_seed_sd, (seeds, 1))
    return {f"m{k}": difficulty + block + rng.normal(0, half["a"], n) + rng.normal(0, half["b"], (seeds, 1))
            + rng.normal(0, half["e"], (seeds, n)) for k in range(methods)}


# The distinct comparisons of claims 1, 2, 3 and 5 among 9 methods (m1..m6 stand for rd, ri, rs, sr, bt, pg).
CLAIM_PAIRS = [(x, y) for x in ("m5", "m4") for y in ("m1", "m2", "m3", "m6")] + [("m3", "m1"), ("m3", "m2"), ("m6", "m1")]


@pytest.mark.parametrize("seeds", [3, 5])
def test_the_claims_family_holds_its_level_and_coverage_under_no_difference(seeds):
    """The report's procedure (daug/report/claims.py): seed-paired intervals, the seed variance pooled
    over all 9 methods of a dataset, the 11 distinct comparisons of each of the 2 datasets as one Holm
    family of 22. Simulated under no true difference with the committed run's variance components: the
    per-comparison false-positive rate at 5% and the family-wise rate stay at their nominal level and
    the 95% intervals cover 0 at least 95% of the time, within 3 Monte Carlo SE."""
    rng = np.random.default_rng(2021 + seeds)
    reps, alpha = 600, 0.05
    rejected = covered = total = families = 0
    for _ in range(reps):
        pvalues = []
        for ds in MEASURED:
            pairs = stats.seed_paired(simulate_methods(rng, MEASURED[ds], seeds), CLAIM_PAIRS)
            for d in pairs.values():
                low, high = d.interval(alpha)
                covered += low <= 0 <= high
                pvalues.append(d.p_value)
        p = np.array(pvalues)
        rejected += int((p <= alpha).sum())
        total += len(p)
        families += int((stats.holm(p) <= alpha).any())
    mc = 3 * math.sqrt(alpha * (1 - alpha) / total)
    assert rejected / total <= alpha + mc, rejected / total
    assert covered / total >= 1 - alpha - mc, covered / total
    assert families / reps <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / reps), families / reps


def test_pooled_interaction_has_methods_minus_one_times_seeds_minus_one_df():
    rng = np.random.default_rng(3)
    values = simulate_methods(rng, MEASURED["paimon"], 4, methods=9, n=50)
    d = stats.seed_paired(values, [("m1", "m0")])[("m1", "m0")]
    assert d.df_seed == 8 * 3 and d.n_seeds == 4 and d.n_examples == 50
    means = np.stack([v.mean(axis=1) for v in values.values()])
    resid = means - means.mean(1, keepdims=True) - means.mean(0, keepdims=True) + means.mean()
    assert d.seed_var == pytest.approx(2 * (resid ** 2).sum() / 24)  # by hand: twice the interaction MS
    assert d.diff == pytest.approx((values["m1"] - values["m0"]).mean())
    with pytest.raises(ValueError, match="m9: not among the methods"):
        stats.seed_paired(values, [("m9", "m0")])
    with pytest.raises(ValueError, match=r"seeds >= 2"):
        stats.seed_paired({"a": np.zeros((1, 5)), "b": np.zeros((1, 5))}, [("a", "b")])


def test_a_rise_against_zero_uses_its_own_seeds():
    rng = np.random.default_rng(4)
    rise = 0.1 + rng.normal(0, 0.05, (3, 1)) + rng.normal(0, 0.02, (3, 40))
    d = stats.seed_mean(rise)
    assert d.df_seed == 2 and d.diff == pytest.approx(rise.mean()) and d.b == 0.0
    assert d.seed_var == pytest.approx(rise.mean(axis=1).var(ddof=1))


def test_seeds_needed_with_assurance_asks_for_more_seeds():
    pm = DESIGN["paimon"]
    typical = stats.seeds_needed(pm["b"], pm["a"], 300, 8, 0.03, noise_sd=pm["e"])
    sure = stats.seeds_needed(pm["b"], pm["a"], 300, 8, 0.03, noise_sd=pm["e"], assurance=0.9)
    assert 3 <= typical < sure


def test_a_rise_against_zero_with_the_seed_variance_pooled_within_methods_holds_its_level():
    """Claim 4's "pg rise > 0": the per-seed mean rises of every method of the dataset pool their
    within-method seed variance (methods x (seeds - 1) df). Under no true rise, with a seed SD that
    dominates the example noise (as in the overfitting study), the 5% test rejects at most 5% of the
    time and covers 0 at least 95% of the time (3 Monte Carlo SE)."""
    rng = np.random.default_rng(44)
    reps, alpha, rejected, covered = 1500, 0.05, 0, 0
    for _ in range(reps):
        rises = {f"m{k}": rng.normal(0, 0.08, (3, 1)) + rng.normal(0, 0.05, (3, 48)) for k in range(4)}
        d = stats.seed_mean(rises["m0"], rises)
        rejected += d.p_value <= alpha
        low, high = d.interval(alpha)
        covered += low <= 0 <= high
    mc = 3 * math.sqrt(alpha * (1 - alpha) / reps)
    assert rejected / reps <= alpha + mc and covered / reps >= 1 - alpha - mc
    assert d.df_seed == 4 * 2


def test_one_seed_s_interval_is_the_t_interval_over_examples():
    from daug.stats import example_mean_interval

    low, high = example_mean_interval([1.0, 2.0, 3.0])
    assert (low + high) / 2 == pytest.approx(2.0)
    assert high - 2.0 == pytest.approx(4.302653 / 3 ** 0.5, rel=1e-6)  # t(0.975, 2 df) * sd 1 / sqrt(3)
