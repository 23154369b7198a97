"""Applying prior rules: hand-worked values, consistency and idempotence on random rule sets,
and the vectorised function against a plain per-image reference."""

from __future__ import annotations

import numpy as np
import pytest

from label_system import PriorRules, Taxonomy, load_default_priors, load_default_taxonomy
from tagger.priors.apply import (
    BELOW_HALF,
    Rule,
    RuleSet,
    apply_priors,
    build_rule_set,
    compile_rules,
    denormalise,
    normalise,
    rule_names,
    select,
    violations,
)
from tests.tagger.priors.random_rules import random_rules, random_taxonomy


@pytest.fixture(scope="module")
def tax() -> Taxonomy:
    return load_default_taxonomy()


@pytest.fixture(scope="module")
def rules(tax: Taxonomy) -> RuleSet:
    return compile_rules(tax, load_default_priors(tax))


def row(tax: Taxonomy, **scores: float) -> np.ndarray:
    out = np.zeros((1, len(tax)), dtype=np.float32)
    for tag, s in scores.items():
        out[0, tax.index(tag)] = s
    return out


# ---- hand-worked values ----------------------------------------------------------------------


def test_an_implication_lifts_the_implied_tag_and_says_which_rule(
    tax: Taxonomy, rules: RuleSet
) -> None:
    res = apply_priors(row(tax, forest=0.8, tree=0.3), rules)
    i = tax.index("tree")
    assert res.scores[0, i] == pytest.approx(0.8)
    assert rules.describe(i, int(res.source[0, i])) == "tree: implied by forest"
    assert res.scores[0, tax.index("forest")] == np.float32(0.8)
    assert res.source[0, tax.index("forest")] == 0


def test_a_chain_applies_in_one_pass_and_parents_say_so(tax: Taxonomy, rules: RuleSet) -> None:
    # puppy-like chain through the taxonomy: dog -> pet -> animal, dog -> mammal -> animal
    res = apply_priors(row(tax, dog=0.9), rules)
    for tag in tax.ancestors("dog"):
        assert res.scores[0, tax.index(tag)] == pytest.approx(0.9), tag
    animal = tax.index("animal")
    assert rules.describe(animal, int(res.source[0, animal])) == "animal: parent of dog"


def test_an_exclusion_caps_the_weaker_tag_and_what_implies_it(
    tax: Taxonomy, rules: RuleSet
) -> None:
    # beach -> outdoor lifts outdoor to 0.8; indoor 0.9 wins; outdoor and beach capped at 0.1
    res = apply_priors(row(tax, indoor=0.9, outdoor=0.2, beach=0.8), rules)
    s = {t: float(res.scores[0, tax.index(t)]) for t in ("indoor", "outdoor", "beach")}
    assert s == pytest.approx({"indoor": 0.9, "outdoor": 0.1, "beach": 0.1})
    assert rules.describe(tax.index("beach"), int(res.source[0, tax.index("beach")])) == (
        "beach: excluded by indoor"
    )


def test_a_present_winner_pushes_the_loser_strictly_below_its_threshold(
    tax: Taxonomy, rules: RuleSet
) -> None:
    th = np.full(len(tax), 0.3, dtype=np.float32)
    res = apply_priors(row(tax, indoor=0.3, outdoor=0.3), rules, th)
    assert res.scores[0, tax.index("indoor")] == np.float32(0.3)  # tie: the first tag wins
    assert res.scores[0, tax.index("outdoor")] < np.float32(0.3)


def test_thresholds_normalise_the_evidence(tax: Taxonomy, rules: RuleSet) -> None:
    # forest passes its threshold 0.2; tree's threshold is 0.6: lifted to exactly "as far above
    # its threshold": u(0.4 | 0.2) = 0.5 + 0.5 * 0.2 / 0.8 = 0.625 -> 0.6 + 0.25 * 0.4 = 0.7
    th = np.full(len(tax), 0.5, dtype=np.float32)
    th[tax.index("forest")], th[tax.index("tree")] = 0.2, 0.6
    res = apply_priors(row(tax, forest=0.4, tree=0.1), rules, th)
    assert res.scores[0, tax.index("tree")] == pytest.approx(0.7)
    assert violations(res.scores, rules, th) == {"implies": 0, "excludes": 0}


def test_normalisation_keeps_presence_exactly() -> None:
    rng = np.random.default_rng(0)
    th = rng.uniform(0.01, 1.0, 50).astype(np.float32)
    th[:3] = (1.0, np.float32(0.5), np.nextafter(np.float32(1.0), np.float32(0)))
    s = rng.random((400, 50), dtype=np.float32)
    s[:50] = th  # exactly at the threshold
    s[50:100] = np.nextafter(th, np.float32(0))  # just below
    u = normalise(s, th)
    assert ((u >= 0.5) == (s >= th)).all()
    back = denormalise(u, th)
    assert ((back >= th) == (s >= th)).all()
    assert np.allclose(back, s, atol=1e-5)


def test_weights_discount_or_switch_off_rules(tax: Taxonomy) -> None:
    priors = load_default_priors(tax)
    half = compile_rules(tax, priors, weights={"implies: forest -> tree": 0.5})
    off = compile_rules(tax, priors, weights={"implies: forest -> tree": 0.0})
    x = row(tax, forest=0.8, tree=0.3)
    assert apply_priors(x, half).scores[0, tax.index("tree")] == pytest.approx(0.4)
    assert apply_priors(x, off).scores[0, tax.index("tree")] == pytest.approx(0.3)
    assert "implies: forest -> tree" in rule_names(tax, priors)
    with pytest.raises(ValueError, match="unknown rules"):
        compile_rules(tax, priors, weights={"implies: forest -> trees": 1})
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        compile_rules(tax, priors, weights={"implies: forest -> tree": 2})


def test_empty_inputs(tax: Taxonomy, rules: RuleSet) -> None:
    empty = apply_priors(np.zeros((0, len(tax)), np.float32), rules)
    assert empty.scores.shape == (0, len(tax)) and empty.source.shape == (0, len(tax))
    none = compile_rules(tax, None, parents=False)
    x = np.random.default_rng(1).random((5, len(tax)), dtype=np.float32)
    assert (apply_priors(x, none).scores == x).all()
    with pytest.raises(ValueError, match=r"scores must be \[N, "):
        apply_priors(x[:, :3], rules)
    with pytest.raises(ValueError, match=r"thresholds must be in \(0, 1\]"):
        apply_priors(x, rules, np.zeros(len(tax), np.float32))


def test_a_cycle_is_refused() -> None:
    with pytest.raises(ValueError, match="cycle"):
        build_rule_set(["a", "b"], [Rule("implies", 0, 1, "x"), Rule("implies", 1, 0, "y")])


# ---- properties on random rule sets ----------------------------------------------------------


def random_case(
    seed: int, thresholds: bool = True
) -> tuple[Taxonomy, PriorRules, RuleSet, np.ndarray, np.ndarray | None]:
    rng = np.random.default_rng(seed)
    tax = random_taxonomy(rng, int(rng.integers(4, 16)))
    priors = random_rules(
        rng, tax, implies=int(rng.integers(0, 8)), excludes=int(rng.integers(0, 8))
    )
    names = rule_names(tax, priors)
    weights = {n: float(rng.choice([0.0, 0.5, 1.0], p=[0.1, 0.2, 0.7])) for n in names}
    rs = compile_rules(tax, priors, weights=weights if seed % 2 else None)
    scores = rng.random((64, len(tax)), dtype=np.float32)
    scores[rng.random(scores.shape) < 0.1] = 0.5  # ties
    th = rng.uniform(0.05, 0.95, len(tax)).astype(np.float32) if thresholds else None
    if th is not None and seed % 3 == 0:
        th[rng.random(len(tax)) < 0.2] = np.nan  # disabled tags
    return tax, priors, rs, scores, th


SEEDS = range(60)


@pytest.mark.parametrize("seed", SEEDS)
def test_output_obeys_every_hard_rule(seed: int) -> None:
    _, _, rs, scores, th = random_case(seed)
    res = apply_priors(scores, rs, th, chunk_rows=17)
    assert violations(res.scores, rs, th) == {"implies": 0, "excludes": 0}
    assert ((res.scores >= 0) & (res.scores <= 1)).all()
    assert ((res.source != 0) == (res.scores != scores)).all()


@pytest.mark.parametrize("seed", SEEDS)
def test_applying_twice_changes_nothing(seed: int) -> None:
    _, _, rs, scores, th = random_case(seed)
    once = apply_priors(scores, rs, th).scores
    twice = apply_priors(once, rs, th)
    assert (twice.scores == once).all() and (twice.source == 0).all()


@pytest.mark.parametrize("seed", SEEDS)
def test_vectorised_equals_the_per_image_reference(seed: int) -> None:
    _, _, rs, scores, th = random_case(seed, thresholds=seed % 4 != 0)
    got = apply_priors(scores, rs, th).scores
    want = np.stack([reference_apply(r, rs.rules, th) for r in scores])
    np.testing.assert_allclose(got, want, atol=2e-6)
    tt = np.full(scores.shape[1], 0.5, np.float32) if th is None else np.nan_to_num(th, nan=0.5)
    assert ((got >= tt) == (want >= tt)).all()


@pytest.mark.parametrize("seed", range(0, 60, 7))
def test_chunking_and_explain_do_not_change_the_scores(seed: int) -> None:
    _, _, rs, scores, th = random_case(seed)
    whole = apply_priors(scores, rs, th)
    plain = apply_priors(scores, rs, th, explain=False, chunk_rows=5)
    assert plain.source is None and (plain.scores == whole.scores).all()
    one_row = np.concatenate([apply_priors(r[None], rs, th).scores for r in scores])
    assert (one_row == whole.scores).all()
    threaded = apply_priors(scores, rs, th, chunk_rows=5, threads=3)
    assert (threaded.scores == whole.scores).all() and (threaded.source == whole.source).all()


def test_select_is_where_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    mask = rng.random((7, 33)) < 0.5
    a = rng.standard_normal((7, 33)).astype(np.float32)
    b = np.float32([np.nan, -0.0, 0.0, np.inf, 1e-45, 3.0, -2.0])[:, None]  # broadcast
    got = select(mask, a, b)
    want = np.where(mask, a, b)
    assert got.dtype == np.float32 and got.tobytes() == want.tobytes()
    ints = rng.integers(-5, 5, (7, 33)).astype(np.int32)
    assert (select(mask, ints, np.int32(-1)) == np.where(mask, ints, -1)).all()


# ---- the plain per-image reference -----------------------------------------------------------


def reference_apply(
    scores: np.ndarray, rules: tuple[Rule, ...], thresholds: np.ndarray | None
) -> np.ndarray:
    """One image, plain Python: lift each tag from the best chain of implications leading to it,
    decide each excluded pair on the lifted scores, cap the loser and every tag implying it, lift
    again; changes within the rounding allowance are skipped unless they flip presence."""
    t = len(scores)
    th = [0.5] * t if thresholds is None else [0.5 if np.isnan(x) else float(x) for x in thresholds]
    th32 = [np.float32(x) for x in th]
    tol = [
        np.float32(1e-5) + np.float32(1e-7) / max(np.float32(1) - x, np.float32(1e-7)) for x in th32
    ]
    edges = [(r.a, r.b, np.float32(r.weight)) for r in rules if r.kind != "excludes"]
    chains = [_implying(b, edges) for b in range(t)]
    u = [_norm(np.float32(s), th32[i]) for i, s in enumerate(scores)]
    v = _lift(u, chains, tol)
    caps = [np.float32(1)] * t
    for r in rules:
        if r.kind != "excludes":
            continue
        a, b, w = r.a, r.b, np.float32(r.weight)
        loser, strong = (b, v[a]) if v[a] >= v[b] else (a, v[b])
        cap = np.float32(1) - w * strong
        if w >= 1 and strong >= 0.5:
            cap = min(cap, BELOW_HALF)
        for x, wx in chains[loser].items():
            caps[x] = min(caps[x], min(cap / wx, np.float32(1)))
    capped = [
        c if (c < ui - tol[i] or (c < 0.5 <= ui)) else ui
        for i, (ui, c) in enumerate(zip(u, caps, strict=True))
    ]
    final = _lift(capped, chains, tol)
    out = []
    for i in range(t):
        if final[i] == u[i]:
            out.append(np.float32(scores[i]))
        elif final[i] >= 0.5:
            k1, k0 = np.float32(2) * (1 - th32[i]), np.float32(2) * th32[i] - 1
            out.append(max(final[i] * k1 + k0, th32[i]))
        else:
            out.append(min(final[i] * (2 * th32[i]), np.nextafter(th32[i], np.float32(0))))
    return np.clip(np.asarray(out, dtype=np.float32), 0, 1)


def _norm(s: np.float32, th: np.float32) -> np.float32:
    if s >= th:
        hi = np.float32(0.5) / max(np.float32(1) - th, np.float32(1e-12))
        return (s - th) * hi + np.float32(0.5)
    return min(s * (np.float32(0.5) / th), BELOW_HALF)


def _lift(u: list, chains: list, tol: list) -> list:
    out = list(u)
    for b, chain in enumerate(chains):
        best = max((w * u[x] for x, w in chain.items() if x != b), default=None)
        if best is not None and (best > u[b] + tol[b] or (best >= 0.5 > u[b])):
            out[b] = best
    return out


def _implying(tag: int, edges: list) -> dict[int, np.float32]:
    """tag itself (weight 1) and every tag that implies it, with the best chain's weight."""
    best = {tag: np.float32(1)}
    changed = True
    while changed:
        changed = False
        for a, b, w in edges:
            if b in best and w * best[b] > best.get(a, 0):
                best[a], changed = w * best[b], True
    return best
