"""Prior rules applied to a score matrix: implications lift, exclusions cap, in one pass.

A rule set (`RuleSet`, from `compile_rules`) holds three kinds of rule over tag columns:

- `parent: dog -> mammal`: a taxonomy parent edge (every tag implies its parents);
- `implies: forest -> tree`: an implication of `label_system/data/priors.yaml`;
- `excludes: indoor / outdoor`: two tags that do not occur in one photo.

Each rule has a weight in [0, 1]: 1 is a hard rule, 0 switches it off, in between discounts the
evidence it passes on. Implications are precomputed as their transitive closure with max-product
weights (`W[a, b]` = the best product of weights over the chains a -> ... -> b), kept per implied
tag as index lists, so a chain applies in one pass.

Where thresholds are given, the rules act on threshold-normalised scores
`u = N_t(s)`: piecewise linear with `N_t(0) = 0`, `N_t(threshold_t) = 0.5`, `N_t(1) = 1`, so
`s >= threshold_t` exactly when `u >= 0.5` ("present"), and a tag's evidence is compared with
another's relative to their own thresholds. Without thresholds `u = s` (every threshold 0.5).

1. Lift: `v_b = max(u_b, max_a W[a, b] * u_a)` over the tags a that imply b.
2. Exclusions, decided on the lifted `v`: for an excluded pair the weaker side loses (a tie: the
   pair's second tag). The loser is capped at `c = 1 - w * v_winner` (mutually exclusive events:
   P(a) + P(b) <= 1), and for a hard rule whose winner is present, strictly below 0.5 (absent).
   Every tag that implies the loser is capped at `c / W[x, loser]` too, so that lifting cannot
   bring the loser back.
3. Lift again from the capped scores: `out = lift(min(u, caps))`; map back with `N_t^-1`.

A change smaller than a float32 rounding allowance (`tolerance`, ~1e-5) is not made unless it
makes a tag present or absent.

Cells no rule changes keep their exact input score. The output obeys every hard rule at the
thresholds it was applied with: no tag present without the tags it implies, no excluded pair
present together. Applying it twice changes nothing (the tests check both on random rule sets).

Thresholds and calibration: the thresholds a tagger predicts with are calibrated on post-prior
scores, and the bundle's thresholds are the ones `Predictor` applies the rules with, so the
consistency above holds for every prediction. The priors stage of the retrain flow normalises
with reference thresholds chosen on the same held-out scores (`tagger.priors.measure`), which
calibration then refines; see flows/priors.py.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from label_system.priors import PriorRules
from label_system.taxonomy import Taxonomy

RuleKind = Literal["parent", "implies", "excludes"]
HALF = np.float32(0.5)
BELOW_HALF = np.nextafter(HALF, np.float32(0.0))  # the largest float32 below 0.5: "absent"
Step = tuple[int, np.ndarray, np.ndarray]  # (target row, its input rows, their weights)
DEFAULT_CHUNK_ROWS = 512  # tag-major rows of 2 KB: a chunk's arrays stay in a core's cache


@dataclass(frozen=True)
class Rule:
    """One rule over tag columns `a`, `b` (a implies b, or a and b exclude each other)."""

    kind: RuleKind
    a: int
    b: int
    name: str
    weight: float = 1.0


@dataclass(frozen=True)
class Level:
    """Steps that read only rows final before them, so they run as one vectorised pass.

    targets `[B]`: the rows the level writes, those with more inputs first; columns: the k-th
    input of every target that has one (the first `len(inputs)` targets) with its weight
    `[m, 1]` float32 (None when all are 1), so that a level reduces in as many passes as its
    widest target has inputs.
    """

    targets: np.ndarray
    columns: tuple[tuple[np.ndarray, np.ndarray | None], ...]

    @classmethod
    def of(cls, groups: list[Step]) -> Level:
        """A level from (target, input rows, weights) groups, each with at least one input."""
        groups = sorted(groups, key=lambda g: -len(g[1]))
        columns = []
        for k in range(len(groups[0][1])):
            have = [g for g in groups if len(g[1]) > k]
            inputs = np.asarray([g[1][k] for g in have], dtype=np.int64)
            ws = np.asarray([g[2][k] for g in have], dtype=np.float32)[:, None]
            columns.append((inputs, None if (ws == 1).all() else ws))
        return cls(np.asarray([g[0] for g in groups], dtype=np.int64), tuple(columns))


@dataclass(frozen=True)
class Exclusions:
    """The excluded pairs as arrays: sides `a`, `b` `[P]`, weights and hardness `[P, 1]`.

    Each pair can cap either side, so its caps come as 2P rows (b's, then a's) with the tag that
    won each (`winners`); `capped` reduces those rows per capped tag.
    """

    a: np.ndarray
    b: np.ndarray
    weights: np.ndarray
    hard: np.ndarray
    winners: np.ndarray
    capped: Level


def _levels(steps: list[Step]) -> list[Level]:
    """`steps` (target, input rows, weights), each after the steps whose targets it reads,
    grouped into levels: a step's level is one more than its inputs' highest (a step without
    inputs changes nothing and is left out)."""
    steps = [step for step in steps if len(step[1])]
    depth: dict[int, int] = {}
    for target, inputs, _ in steps:
        depth[target] = 1 + max((depth.get(i, 0) for i in inputs.tolist()), default=0)
    grouped: dict[int, list[Step]] = defaultdict(list)
    for step in steps:
        grouped[depth[step[0]]].append(step)
    return [Level.of(grouped[d]) for d in sorted(grouped)]


def _exclusions(pairs: list[tuple[int, int, float]]) -> Exclusions | None:
    if not pairs:
        return None
    a = np.asarray([p[0] for p in pairs], dtype=np.int64)
    b = np.asarray([p[1] for p in pairs], dtype=np.int64)
    w = np.asarray([p[2] for p in pairs], dtype=np.float32)[:, None]
    rows: dict[int, list[int]] = defaultdict(list)  # capped tag -> its rows among the 2P
    for row, tag in enumerate(np.concatenate([b, a]).tolist()):
        rows[tag].append(row)
    capped = Level.of([(t, np.asarray(r), np.ones(len(r), np.float32)) for t, r in rows.items()])
    return Exclusions(a, b, w, w >= 1, np.concatenate([a, b]).astype(np.int32), capped)


@dataclass
class RuleSet:
    """Rules compiled for `apply_priors`: closure index lists and exclusion pairs.

    sources[b]: columns that imply b (transitively), `weights[b]` their closure weights W[., b];
    lift_levels: the direct implications (b from its direct impliers, max-product), impliers
      first: one pass over them is the closure;
    cap_levels: caps passed from each tag to the tags that directly imply it, implied tags first;
    relift_tags, relift_levels: the tags a cap can reach and the tags they imply, and their
      lifts (run again after the caps);
    pairs: exclusion (a, b, weight); exclusion: the same as arrays (`Exclusions`).
    Each level (`Level`) depends only on earlier ones, so it is one vectorised pass.
    """

    tag_ids: tuple[str, ...]
    rules: tuple[Rule, ...]
    sources: list[np.ndarray] = field(default_factory=list)
    weights: list[np.ndarray] = field(default_factory=list)
    relift_tags: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pairs: list[tuple[int, int, float]] = field(default_factory=list)
    via_rule: dict[tuple[int, int], bool] = field(default_factory=dict)
    lift_levels: list[Level] = field(default_factory=list)
    relift_levels: list[Level] = field(default_factory=list)
    cap_levels: list[Level] = field(default_factory=list)
    exclusion: Exclusions | None = None

    @property
    def num_tags(self) -> int:
        return len(self.tag_ids)

    def names(self) -> list[str]:
        return [r.name for r in self.rules]

    def describe(self, tag: int, code: int) -> str | None:
        """What a `PriorResult.source` code says about `tag`, e.g. 'tree: implied by forest'."""
        if code == 0:
            return None
        t = self.tag_ids[tag]
        if code > 0:
            src = code - 1
            verb = "implied by" if self.via_rule.get((src, tag), True) else "parent of"
            return f"{t}: {verb} {self.tag_ids[src]}"
        return f"{t}: excluded by {self.tag_ids[-code - 1]}"


def rule_names(taxonomy: Taxonomy, priors: PriorRules | None, parents: bool = True) -> list[str]:
    """Names of every rule `compile_rules` builds (for configs that weight or drop rules)."""
    return [r.name for r in _rules(taxonomy, priors, parents)]


def _rules(taxonomy: Taxonomy, priors: PriorRules | None, parents: bool) -> list[Rule]:
    index = {t: i for i, t in enumerate(taxonomy.tag_ids)}
    out: list[Rule] = []
    if parents:
        for t in taxonomy.tag_ids:
            for p in taxonomy.parents(t):
                out.append(Rule("parent", index[t], index[p], f"parent: {t} -> {p}"))
    if priors is not None:
        for a, b in priors.implies:
            out.append(Rule("implies", index[a], index[b], f"implies: {a} -> {b}"))
        for a, b in priors.excludes:
            out.append(Rule("excludes", index[a], index[b], f"excludes: {a} / {b}"))
    return out


def compile_rules(
    taxonomy: Taxonomy,
    priors: PriorRules | None,
    *,
    weights: Mapping[str, float] | None = None,
    parents: bool = True,
) -> RuleSet:
    """A `RuleSet` over `taxonomy`'s columns: its parent edges (when `parents`) and `priors`.

    weights: rule name -> weight in [0, 1] (default 1; 0 switches the rule off); names as
    `rule_names` gives them, e.g. {"implies: beach -> water": 0.5, "parent: dog -> pet": 0}.

    >>> from label_system.taxonomy import load_default_taxonomy
    >>> from label_system.priors import load_default_priors
    >>> tax = load_default_taxonomy()
    >>> rs = compile_rules(tax, load_default_priors(tax), weights={"implies: forest -> tree": 0})
    >>> "implies: forest -> tree" in rs.names()
    False
    """
    rules = _rules(taxonomy, priors, parents)
    weights = dict(weights or {})
    known = {r.name for r in rules}
    unknown = sorted(set(weights) - known)
    if unknown:
        raise ValueError(
            f"rule weights name unknown rules {unknown[:5]}; names look like "
            f"{sorted(known)[:3]} (see tagger.priors.apply.rule_names)"
        )
    bad = {k: v for k, v in weights.items() if not 0.0 <= float(v) <= 1.0}
    if bad:
        raise ValueError(f"rule weights must be in [0, 1]; got {bad}")
    kept = tuple(
        Rule(r.kind, r.a, r.b, r.name, float(weights.get(r.name, 1.0)))
        for r in rules
        if weights.get(r.name, 1.0) > 0
    )
    return build_rule_set(taxonomy.tag_ids, kept)


def build_rule_set(tag_ids: Iterable[str], rules: Iterable[Rule]) -> RuleSet:
    """Closure and exclusion lists for `rules` (implications must not form a cycle)."""
    tag_ids = tuple(tag_ids)
    rules = tuple(rules)
    t = len(tag_ids)
    edges: dict[int, dict[int, tuple[float, bool]]] = defaultdict(dict)  # b -> a -> (w, rule?)
    for r in rules:
        if r.kind == "excludes" or r.weight <= 0:
            continue
        old = edges[r.b].get(r.a, (0.0, False))
        if r.weight > old[0] or (r.weight == old[0] and r.kind == "implies"):
            edges[r.b][r.a] = (r.weight, r.kind == "implies")
    closure: dict[int, dict[int, tuple[float, bool]]] = {}
    order = _topological(t, edges)
    for b in order:
        best: dict[int, tuple[float, bool]] = {}
        for a, (w, is_rule) in edges.get(b, {}).items():
            for x, (wx, rx) in [(a, (1.0, False)), *closure[a].items()]:
                cand = (w * wx, is_rule or rx)
                if x not in best or cand[0] > best[x][0]:
                    best[x] = cand
        closure[b] = best
    rs = RuleSet(tag_ids, rules)
    for b in range(t):
        src = sorted(closure[b])
        rs.sources.append(np.asarray(src, dtype=np.int64))
        rs.weights.append(np.asarray([closure[b][x][0] for x in src], dtype=np.float32))
        rs.via_rule.update({(x, b): closure[b][x][1] for x in src})
    lift_steps: list[Step] = []  # topological order: impliers first
    cap_steps: list[Step] = []  # implied tags first
    implied: dict[int, dict[int, float]] = defaultdict(dict)  # a -> b -> w
    for b in order:
        if edges.get(b):
            srcs = sorted(edges[b])
            lift_steps.append(
                (
                    b,
                    np.asarray(srcs, np.int64),
                    np.asarray([edges[b][a][0] for a in srcs], np.float32),
                )
            )
            for a in srcs:
                implied[a][b] = edges[b][a][0]
    pair_tags = {t for r in rules if r.kind == "excludes" and r.weight > 0 for t in (r.a, r.b)}
    capped_tags = pair_tags | {int(x) for t in pair_tags for x in rs.sources[t]}
    for x in reversed(order):  # only tags a cap can reach: excluded tags and their impliers
        if x in capped_tags and implied.get(x):
            ys = sorted(y for y in implied[x] if y in capped_tags)
            cap_steps.append(
                (x, np.asarray(ys, np.int64), np.asarray([implied[x][y] for y in ys], np.float32))
            )
    reach = set(capped_tags)
    for b in order:  # impliers first: b is reached when one of its impliers is
        if any(a in reach for a in edges.get(b, {})):
            reach.add(b)
    rs.relift_tags = np.asarray(sorted(reach), dtype=np.int64)
    rs.pairs = [(r.a, r.b, r.weight) for r in rules if r.kind == "excludes" and r.weight > 0]
    rs.lift_levels = _levels(lift_steps)
    rs.relift_levels = _levels([step for step in lift_steps if step[0] in reach])
    rs.cap_levels = _levels(cap_steps)
    rs.exclusion = _exclusions(rs.pairs)
    return rs


def _topological(t: int, edges: Mapping[int, Mapping[int, object]]) -> list[int]:
    """Columns ordered so that every implying tag comes before the tags it implies."""
    indegree = [len(edges.get(b, {})) for b in range(t)]
    out_edges: dict[int, list[int]] = defaultdict(list)
    for b, srcs in edges.items():
        for a in srcs:
            out_edges[a].append(b)
    order = [b for b in range(t) if indegree[b] == 0]
    for a in order:  # grows while iterating (Kahn's algorithm)
        for b in out_edges[a]:
            indegree[b] -= 1
            if indegree[b] == 0:
                order.append(b)
    if len(order) != t:
        raise ValueError("implications form a cycle; check the rules with label_system.priors")
    return order


# ---- application ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PriorResult:
    """Post-prior scores `[N, T]` float32 and, per cell, which rule changed it.

    source: int32 `[N, T]`: 0 unchanged; `k > 0` lifted by tag `k - 1` (it implies this tag);
    `k < 0` capped by an exclusion that tag `-k - 1` won. `RuleSet.describe(tag, code)` words it.
    None when applied with `explain=False`.
    """

    scores: np.ndarray
    source: np.ndarray | None


def check_thresholds(thresholds: np.ndarray | None, t: int) -> np.ndarray:
    """Thresholds `[T]` float32 for normalising: NaN (a disabled tag) -> 0.5; (0, 1] required."""
    if thresholds is None:
        return np.full(t, HALF, dtype=np.float32)
    th = np.asarray(thresholds, dtype=np.float32)
    if th.shape != (t,):
        raise ValueError(f"thresholds have shape {th.shape}; the rules cover {t} tags")
    th = np.where(np.isnan(th), HALF, th)
    if (th <= 0).any() or (th > 1).any():
        bad = np.flatnonzero((th <= 0) | (th > 1))[:5]
        raise ValueError(f"thresholds must be in (0, 1]; columns {bad.tolist()} are not")
    return th


def tolerance(thresholds: np.ndarray) -> np.ndarray:
    """Smallest change `[T]` (normalised units) the rules make unless it flips presence.

    A changed score is written back through `denormalise` in float32; read again, it may sit a
    rounding error (~3e-8 / (1 - threshold)) away from where it was put. Skipping changes below
    twice that keeps a second application from moving anything (idempotence).
    """
    gap = np.maximum(np.float32(1) - thresholds, np.float32(1e-7))
    return (np.float32(1e-5) + np.float32(1e-7) / gap).astype(np.float32)


def normalise(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """`u = N_t(s)`: threshold -> 0.5, linear on each side; `u >= 0.5` exactly when `s >= t`.

    thresholds broadcast against scores: `[T]` for `[n, T]` scores, `[T, 1]` for tag-major.
    Below: `u = s * (0.5 / t)` (at most the float below 0.5); above: `u = 0.5 + (s - t) * (0.5 /
    (1 - t))`.
    """
    s = scores.astype(np.float32, copy=False)
    th = np.asarray(thresholds, dtype=np.float32)
    lo = (HALF / th).astype(np.float32)
    hi = (HALF / np.maximum(np.float32(1) - th, np.float32(1e-12))).astype(np.float32)
    above = np.subtract(s, th, dtype=np.float32)
    np.multiply(above, hi, out=above)
    np.add(above, HALF, out=above)
    below = np.multiply(s, lo, dtype=np.float32)
    np.minimum(below, BELOW_HALF, out=below)
    return select(s < th, below, above)


def denormalise(u: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """`N_t^-1(u)`, with `s >= t` exactly when `u >= 0.5` (guarded against rounding)."""
    th = np.asarray(thresholds, dtype=np.float32)
    k1 = (np.float32(2) * (np.float32(1) - th)).astype(np.float32)
    k0 = (np.float32(2) * th - np.float32(1)).astype(np.float32)
    above = np.multiply(u, k1, dtype=np.float32)
    np.add(above, k0, out=above)
    np.maximum(above, th, out=above)  # above: at least the threshold
    below = np.multiply(u, (np.float32(2) * th).astype(np.float32), dtype=np.float32)
    np.minimum(below, np.nextafter(th, np.float32(0.0)), out=below)  # below: under it
    s = select(u < HALF, below, above)
    return np.clip(s, np.float32(0), np.float32(1), out=s)


def apply_priors(
    scores: np.ndarray,
    rules: RuleSet,
    thresholds: np.ndarray | None = None,
    *,
    explain: bool = True,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    threads: int | None = None,
) -> PriorResult:
    """Post-prior scores `[N, T]` (see the module docstring), processed `chunk_rows` at a time.

    scores: probabilities `[N, T]` in [0, 1], columns in `rules.tag_ids` order.
    thresholds: `[T]` the tagger predicts with (None: 0.5 for every tag).
    explain: also say which rule changed each cell (`PriorResult.source`; without: None).
    threads: chunks worked on at once (numpy releases the GIL inside each array operation);
      None: the CPUs this process may run on. A single chunk runs in the calling thread.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape[1] != rules.num_tags:
        raise ValueError(f"scores must be [N, {rules.num_tags}]; got {scores.shape}")
    th = check_thresholds(thresholds, rules.num_tags)
    # outputs in the input's memory order: a tag-major input ([T, N] passed transposed) is read
    # and written without transposing copies
    out = np.empty_like(scores, dtype=np.float32)
    source = np.zeros_like(scores, dtype=np.int32) if explain else None

    def run(r0: int) -> None:
        rows = slice(r0, r0 + chunk_rows)
        out[rows], src = _apply_chunk(scores[rows], rules, th, explain)
        if source is not None and src is not None:
            source[rows] = src

    starts = range(0, len(scores), chunk_rows)
    workers = min(len(starts), threads or len(os.sched_getaffinity(0)))
    if workers <= 1:
        for r0 in starts:
            run(r0)
    else:
        with ThreadPoolExecutor(workers, thread_name_prefix="priors") as pool:
            list(pool.map(run, starts))  # chunks write disjoint rows; map re-raises errors
    return PriorResult(out, source)


def _apply_chunk(
    scores: np.ndarray, rules: RuleSet, th: np.ndarray, explain: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    # tag-major [T, n]: every step below reads and writes whole contiguous tag rows
    s = np.ascontiguousarray(scores.T, dtype=np.float32)
    thc = th[:, None]
    tol = tolerance(th)[:, None]
    u = normalise(s, thc)
    final, src = lift(u, rules, tol, explain)
    winner = None
    if rules.pairs:
        caps, winner = exclusion_caps(final, rules, explain)
        # a cap cuts below u - tol, or below 0.5 for a present tag
        bar = np.maximum(u - tol, HALF * (u >= HALF))  # caps are >= 0: below 0 is no cut
        cut = caps < bar
        images = np.flatnonzero(cut.any(axis=0))
        if images.size > s.shape[1] // 2:
            capped = select(cut, caps, u)  # the capped scores; lift them again
            final, src = relift(capped, final, src, rules, tol)
        elif images.size:  # only the images a cap touched
            capped = select(cut[:, images], caps[:, images], u[:, images])
            sub_src = None if src is None else src[:, images]
            sub_final, sub_src = relift(capped, final[:, images], sub_src, rules, tol)  # copies
            final[:, images] = sub_final
            if src is not None and sub_src is not None:
                src[:, images] = sub_src
    changed = final != u
    out = denormalise(final, thc)
    out = select(changed, out, s)
    if not explain:
        return out.T, None
    assert src is not None
    up = final > u
    source = (src + np.int32(1)) * up
    if winner is not None:
        source = select(changed & ~up, -(winner + np.int32(1)), source)
    return out.T, source.T


def lift(
    u: np.ndarray, rules: RuleSet, tol: np.ndarray, explain: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """Tag-major `u [T, n]` -> `v_b = max(u_b, max_a W[a, b] u_a)` and (with `explain`), per
    cell, the tag whose evidence it holds (itself when not raised).

    One pass over the direct implications, level by level (`RuleSet.lift_levels`): `v_a` is
    final before any tag it implies reads it, so chains apply at once. tol `[T, 1]`: a raise
    smaller than this is not made unless it makes the tag present.
    """
    v = u.copy()
    src = None
    if explain:
        src = np.broadcast_to(np.arange(len(u), dtype=np.int32)[:, None], u.shape).copy()
    for level in rules.lift_levels:
        rows = level.targets
        _raise_level(v, src, level, u[rows], tol[rows])
    return v, src


def relift(
    capped: np.ndarray,
    lifted: np.ndarray,
    src: np.ndarray | None,
    rules: RuleSet,
    tol: np.ndarray,
) -> tuple[np.ndarray, np.ndarray | None]:
    """`lift(capped)` where `lifted = lift(u)` and `capped` differs from `u` only on the tags a
    cap can reach: only those tags and the tags they imply are lifted again (in place: `lifted`
    and `src` are overwritten)."""
    tags = rules.relift_tags
    lifted[tags] = capped[tags]
    if src is not None:
        src[tags] = tags.astype(np.int32)[:, None]
    for level in rules.relift_levels:
        rows = level.targets
        _raise_level(lifted, src, level, capped[rows], tol[rows])
    return lifted, src


def _raise_level(
    v: np.ndarray, src: np.ndarray | None, level: Level, own: np.ndarray, tol: np.ndarray
) -> None:
    """v[b] = the best of `w * v[a]` over each target b's inputs a where that beats the target's
    own score by more than `tol`, or makes an absent tag present (a tie keeps the earlier
    input). `own`: the targets' scores before the level (what `v[targets]` holds)."""
    best, best_src = _reduce(v, src, level, np.greater)
    rows = level.targets
    raise_ = best > own + tol
    raise_ |= (best >= HALF) & (own < HALF)
    if src is not None and best_src is not None:
        src[rows] = select(raise_, best_src, src[rows])
    np.multiply(best, raise_, out=best)  # scores are >= 0: max(0, own) keeps own
    v[rows] = np.maximum(best, own)


def _reduce(
    x: np.ndarray, tags: np.ndarray | None, level: Level, better: np.ufunc
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per target of `level`, the best (`better`: np.greater for max, np.less for min) of
    `x[input]` times (max) or over (min) its weight, and the `tags` row that came with it."""
    scale = np.multiply if better is np.greater else np.divide
    best, best_tags = None, None
    for inputs, w in level.columns:
        cand = x[inputs]  # a gathered copy
        if w is not None:
            scale(cand, w, out=cand)
        if best is None:
            best, best_tags = cand, None if tags is None else tags[inputs]
            continue
        m = len(inputs)
        if best_tags is not None and tags is not None:
            wins = better(cand, best[:m])
            best_tags[:m] = select(wins, tags[inputs], best_tags[:m])
        (np.maximum if better is np.greater else np.minimum)(best[:m], cand, out=best[:m])
    assert best is not None
    return best, best_tags


def select(mask: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`np.where(mask, a, b)` for float32 or int32 arrays (broadcast to `mask`'s shape), by bit
    operations: numpy's `where` and masked ufuncs run 5-8x slower on an unpredictable mask."""
    a = np.ascontiguousarray(np.broadcast_to(a, mask.shape))
    b = np.ascontiguousarray(np.broadcast_to(b, mask.shape))
    assert a.dtype == b.dtype and a.dtype.itemsize == 4, (a.dtype, b.dtype)
    bits = np.negative(mask.view(np.int8), dtype=np.int32)  # all ones where mask
    ai, bi = a.view(np.int32), b.view(np.int32)
    out = np.bitwise_xor(ai, bi)
    out &= bits
    out ^= bi
    return out.view(a.dtype)


def exclusion_caps(
    v: np.ndarray, rules: RuleSet, explain: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """Tag-major caps `[T, n]` (1 = none) from the excluded pairs decided on lifted scores `v`,
    passed on to every tag implying a loser (divided by the chain's weight), and (with
    `explain`) the winning tag of the pair that set each cap (-1 = none)."""
    caps = np.ones(v.shape, dtype=np.float32)
    winner = np.full(v.shape, -1, dtype=np.int32) if explain else None
    ex = rules.exclusion
    if ex is None:
        return caps, winner
    one = np.float32(1)
    va, vb = v[ex.a], v[ex.b]
    b_loses = va >= vb  # a tie: the pair's second tag loses
    strong = np.maximum(va, vb)
    cap = one - ex.weights * strong  # in [0, 1]
    cap = select(ex.hard & (strong >= HALF), np.minimum(cap, BELOW_HALF), cap)
    # the loser's cap, 1 on the winner: max(cap, 1 where it won)
    want = np.concatenate([np.maximum(cap, ~b_loses), np.maximum(cap, b_loses)])
    who = None
    if winner is not None:
        who = np.broadcast_to(ex.winners[:, None], want.shape)
    best, best_who = _reduce(want, who, ex.capped, np.less)
    rows = ex.capped.targets
    caps[rows] = best
    if winner is not None and best_who is not None:
        winner[rows] = (best_who + np.int32(1)) * (best < one) - np.int32(1)
    for level in rules.cap_levels:  # implied tags first: their caps are final
        best, best_who = _reduce(caps, winner, level, np.less)
        rows = level.targets
        lower = best < caps[rows]
        caps[rows] = np.minimum(best, caps[rows])
        if winner is not None and best_who is not None:
            winner[rows] = select(lower, best_who, winner[rows])
    return caps, winner


# ---- checking ---------------------------------------------------------------------------------


def violations(
    scores: np.ndarray, rules: RuleSet, thresholds: np.ndarray | None = None
) -> dict[str, int]:
    """Hard-rule violations of decisions `scores >= thresholds` (NaN threshold: tag disabled,
    its rules not checked): {"implies": cells where a present tag's implied tag is absent,
    "excludes": rows x pairs present together}."""
    th_raw = None if thresholds is None else np.asarray(thresholds, dtype=np.float32)
    th = check_thresholds(th_raw, rules.num_tags)
    enabled = np.ones(rules.num_tags, bool) if th_raw is None else ~np.isnan(th_raw)
    present = np.asarray(scores, dtype=np.float32) >= th[None, :]
    bad_implies = 0
    for b in range(rules.num_tags):
        if not enabled[b]:
            continue
        for a, w in zip(rules.sources[b], rules.weights[b], strict=True):
            # closure weight 1: a chain of hard rules leads from a to b
            if w >= 1 and enabled[a]:
                bad_implies += int((present[:, a] & ~present[:, b]).sum())
    bad_excludes = 0
    for a, b, w in rules.pairs:
        if w >= 1 and enabled[a] and enabled[b]:
            bad_excludes += int((present[:, a] & present[:, b]).sum())
    return {"implies": bad_implies, "excludes": bad_excludes}
