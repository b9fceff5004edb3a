"""deepinfo.book.verdicts: each outcome reached on synthetic per-unit values with known answers."""

import json
import math

import numpy as np
import pytest

from deepinfo.book.verdicts import (HELD, INCONCLUSIVE, NOT_HELD, Condition, accuracy_condition, bootstrap, combine,
                               parts_text,
                               constraint_condition, correlation, decide, decide_correlation,
                               decide_difference, on_constraint, undecidable)


def normal(mean, sd, n, seed=0):
    return np.random.default_rng(seed).normal(mean, sd, n)


def test_a_clear_positive_effect_is_held_and_its_interval_covers_the_mean():
    v = decide(normal(1.0, 1.0, 200))
    assert v.verdict == HELD and v.n_units == 200 and v.n_needed is None
    lo, hi = v.interval
    # the percentile interval of a mean is close to mean +- 1.96 SE (SE = 1/sqrt(200) = 0.071)
    assert lo < v.effect < hi and hi - lo == pytest.approx(2 * 1.96 / math.sqrt(200), rel=0.15)


def test_the_opposite_effect_is_not_held():
    assert decide(normal(-1.0, 1.0, 100)).verdict == NOT_HELD


def test_an_effect_below_the_smallest_one_the_claim_needs_is_not_held():
    # a real but tiny positive effect, against a claim that needs at least 0.5
    v = decide(normal(0.1, 0.1, 100), threshold=0.5)
    assert v.effect > 0 and v.verdict == NOT_HELD


def test_a_straddling_interval_is_inconclusive_and_says_how_many_units_would_decide():
    values = normal(0.3, 1.0, 20, seed=3)
    v = decide(values)
    assert v.verdict == INCONCLUSIVE
    lo, hi = v.interval
    assert lo < 0 < hi
    # n_needed: the half-width shrinks as 1/sqrt(n) until it equals the distance to the threshold
    expected = 20 * (((hi - lo) / 2) / abs(v.effect)) ** 2
    assert v.n_needed == math.ceil(expected)
    # and that many units at the same spread do decide
    more = decide(normal(v.effect, values.std(), 4 * v.n_needed, seed=4))
    assert more.verdict == HELD
    assert "would decide" in v.summary()


def test_side_less_mirrors_greater():
    assert decide(normal(-1.0, 1.0, 100), side="less").verdict == HELD
    assert decide(normal(1.0, 1.0, 100), side="less").verdict == NOT_HELD


def test_equivalence_within_a_margin():
    assert decide(normal(0.0, 0.05, 100), threshold=0.1, side="within").verdict == HELD
    assert decide(normal(0.5, 0.05, 100), threshold=0.1, side="within").verdict == NOT_HELD
    assert decide(normal(-0.5, 0.05, 100), threshold=0.1, side="within").verdict == NOT_HELD
    assert decide(normal(0.1, 0.3, 20), threshold=0.1, side="within").verdict == INCONCLUSIVE


def test_estimator_noise_widens_the_interval_and_can_turn_a_verdict_inconclusive():
    values = normal(0.2, 0.2, 50)
    quiet, noisy = decide(values), decide(values, noise_sd=0.2)
    assert quiet.verdict == HELD and noisy.verdict == INCONCLUSIVE
    assert (noisy.interval[1] - noisy.interval[0]) > 2 * (quiet.interval[1] - quiet.interval[0])


def test_verdicts_are_deterministic_under_their_seed():
    values = normal(0.1, 1.0, 30)
    assert decide(values) == decide(values)
    assert decide(values, seed=1).interval != decide(values, seed=2).interval


def test_non_finite_units_are_dropped_and_not_counted():
    v = decide([1.0, 2.0, float("nan"), 3.0, float("inf"), 2.5, 1.5])
    assert v.n_units == 5 and v.effect == pytest.approx(2.0)
    with pytest.raises(ValueError, match="non-finite"):
        decide([float("nan")])
    with pytest.raises(ValueError, match="side"):
        decide([1.0, 2.0], side="up")


def test_a_single_unit_is_flagged():
    v = decide([0.5])
    assert v.n_units == 1 and "one image only" in v.design and v.verdict == INCONCLUSIVE


def test_fewer_than_five_units_never_decide():
    # two positive values: the percentile interval lies above 0, but that is no confidence statement
    few = decide([0.0037, 0.0038])
    assert few.interval[0] > 0 and few.verdict == INCONCLUSIVE and "fewer than 5" in few.design
    assert few.n_needed >= 5
    assert decide([1.0, 1.1, 0.9, 1.2, 1.05]).verdict == HELD


def test_difference_of_independent_groups():
    a, b = normal(1.0, 1.0, 80, 1), normal(0.0, 1.0, 60, 2)
    v = decide_difference(a, b)
    assert v.verdict == HELD and v.n_units == 140
    assert v.effect == pytest.approx(a.mean() - b.mean())
    assert decide_difference(b, a).verdict == NOT_HELD


def test_correlation_over_units():
    rng = np.random.default_rng(0)
    x = rng.normal(size=60)
    assert decide_correlation(x, x + 0.3 * rng.normal(size=60)).verdict == HELD
    assert decide_correlation(x, -x + 0.3 * rng.normal(size=60)).verdict == NOT_HELD
    assert decide_correlation(x, rng.normal(size=60)).verdict == INCONCLUSIVE
    # Pearson and Spearman agree on a monotone linear relation
    assert decide_correlation(x, 2 * x, method="pearson").effect == pytest.approx(1.0)


def test_a_correlation_over_four_networks_says_it_cannot_decide_by_permutation():
    v = decide_correlation([0.2, 0.3, 0.25, 0.4], [1.0, 0.5, 2.0, 1.5])
    assert "1/4!" in v.design and v.verdict == INCONCLUSIVE
    # even a perfect ordering of 4 (bootstrap interval [1, 1]) cannot decide; 5 units could
    perfect = decide_correlation([1, 2, 3, 4], [2, 3, 5, 9])
    assert perfect.interval == (1.0, 1.0) and perfect.verdict == INCONCLUSIVE and perfect.n_needed == 5
    assert decide_correlation(range(12), [0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10]).verdict == HELD
    with pytest.raises(ValueError, match="at least 3"):
        decide_correlation([1, 2], [1, 2])


def test_a_constant_column_is_undefined_not_a_verdict():
    v = decide_correlation([1, 2, 3, 4, 5, 6], [1, 1, 1, 1, 1, 1])
    assert v.verdict == INCONCLUSIVE and math.isnan(v.effect)


def test_bootstrap_resamples_units_with_replacement():
    reps = bootstrap([0.0, 1.0], n_boot=4000, seed=0)
    # each replicate mean is 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4
    assert set(np.unique(reps)) <= {0.0, 0.5, 1.0}
    assert (reps == 0.5).mean() == pytest.approx(0.5, abs=0.03)


def test_undecidable_and_serialisation():
    v = undecidable("RU not measured in this profile", unit="images")
    assert v.verdict == INCONCLUSIVE and v.design.startswith("RU not measured")
    d = json.loads(json.dumps(v.to_dict()))
    assert d["verdict"] == "inconclusive" and len(d["interval"]) == 2


def test_conditions():
    acc = accuracy_condition("VGG-16", 0.29, 0.75, paper_words="fine-tuned ~75 %")
    assert not acc.met and "29.0%" in acc.words() and "not met" in acc.words()
    assert accuracy_condition("ResNet-20", 0.81, 0.82).met
    ratios = [1.0, 1.01, 1.3, 0.99, float("nan")]
    assert on_constraint(ratios, 0.05).tolist() == [True, True, False, True, False]
    c = constraint_condition(ratios, 0.05)
    assert not c.met and "3 of 5" in c.observed and "2 left out" in c.observed
    assert constraint_condition([1.0] * 19 + [2.0], 0.05).met
    assert Condition("x", np.bool_(True), "y").met is True


def test_combine_is_conservative_and_returns_the_deciding_part():
    held_a, held_b = decide(normal(1.0, 1.0, 100)), decide(normal(0.5, 1.0, 100, seed=1))
    unsure, failed = decide(normal(0.3, 1.0, 20, seed=3)), decide(normal(-1.0, 1.0, 100))
    both = combine({"a": held_a, "b": held_b})
    assert both.verdict == HELD and both.effect == held_b.effect  # the part closest to the threshold
    assert "2 held" in both.design and "shown: b" in both.design and both.part == "b"
    unsure2 = decide(normal(0.1, 1.0, 20, seed=5))
    open_ = combine([held_a, unsure, unsure2])
    assert open_.verdict == INCONCLUSIVE and open_.n_needed == max(unsure.n_needed, unsure2.n_needed)
    mixed = combine([held_a, unsure, failed])
    assert mixed.verdict == NOT_HELD and mixed.effect == failed.effect and "1 not held" in mixed.design
    assert "Part a: held" in parts_text({"a": held_a})
    assert combine([held_a]).verdict == held_a.verdict and combine({"x": held_a}).part == "x"
    with pytest.raises(ValueError):
        combine([])


def test_a_combined_verdict_states_every_parts_rule_and_reconstruction_condition():
    v = combine({"gap": decide(normal(0.02, 0.01, 30), threshold=0.1, side="less"),
                 "corr": decide(normal(0.9, 0.02, 30), threshold=0.8)})
    assert v.verdict == HELD and v.rule.startswith("held only if every part is held -- gap: held when")
    assert "corr: held when" in v.rule
    from deepinfo.book.verdicts import reconstruction_condition
    ok = reconstruction_condition("ResNet-20", {"layer1": 0.01, "layer3": 0.02}, 0.06)
    assert ok.met and "worst 33% of it" in ok.observed
    assert not reconstruction_condition("VGG-16", {"f": 0.075}, 0.06).met


def test_correlation_by_hand_and_nan_when_undefined():
    assert correlation([1, 2, 3, 4], [10, 20, 40, 30]) == pytest.approx(0.8)  # ranks 1 2 3 4 vs 1 2 4 3
    assert correlation([1, 2, 3], [2, 4, 7], "pearson") == pytest.approx(np.corrcoef([1, 2, 3], [2, 4, 7])[0, 1])
    assert correlation([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(np.corrcoef([1.5, 1.5, 3, 4], [1, 2, 3, 4])[0, 1])
    for x, y in (([1, 2], [1, 2]), ([1, 2, np.nan], [1, 2, 3]), ([1, 1, 1], [1, 2, 3])):
        assert np.isnan(correlation(x, y))
    assert correlation([1, 2, np.nan, 3], [1, 2, 5, 4], drop_nonfinite=True) == pytest.approx(1.0)


def test_decide_if_none_gives_the_reason_instead_of_raising():
    v = decide([np.nan, np.nan], threshold=0.0, side="less", unit="images", if_none="every map off the constraint")
    assert v.verdict == INCONCLUSIVE and v.n_units == 0 and "every map off the constraint" in v.design
    with pytest.raises(ValueError, match="non-finite"):
        decide([np.nan, np.nan])


def test_ratio_error_is_the_worst_distance_from_the_constraint():
    from deepinfo.book.verdicts import ratio_error

    # |0.9 - 1| = 0.1, |1.25 - 1| = 0.25 (the worst), NaN skipped; float32 stays float32
    assert ratio_error([0.9, 1.25, float("nan"), 1.0]) == pytest.approx(0.25)
    assert ratio_error(np.array([1.5, 0.75], dtype=np.float32)).dtype == np.float32
    assert math.isnan(ratio_error([]))
