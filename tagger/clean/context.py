"""Label context: out-of-fold probabilities that also read an image's other labels.

The image model scores each tag from pixels alone. An image's other known labels carry evidence
too: `dining_room` labelled and `chair` labelled negative is suspect, `indoor` and `outdoor` both
positive is suspect, `dog` without `animal` breaks a taxonomy edge. Stacking adds that evidence
to the image model's out-of-fold score, per tag, with one logistic regression (stacked
generalisation, Wolpert 1992):

    logit q[i, j] = a[j] * logit p[i, j] + b[j] + sum_{k != j} x[i, k] * W[k, j]

where `p` are the image model's out-of-fold probabilities and `x[i, k]` is +1 for a known
positive, -1 for a known negative, 0 for an unknown cell (unknown is neither). A tag's own label
is never a feature of itself (`W[j, j] = 0`). Every tag is fitted at once (the loss is a sum over
tags, so this equals one regression per tag) on known cells only, with an L2 penalty on `W`.

Out of fold twice over: rows are split into the groups that scored them (the cross-fit models,
or the manifest's folds), and the regression that scores group g is fitted on the other groups'
rows, so no label judges itself. `q` then replaces `p` where label issues are ranked.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

_EPS = 1e-6
_SCORE_ROWS = 65_536  # rows scored per step: memory stays O(chunk x tags), not O(N x tags)
_Weights = tuple[torch.Tensor, torch.Tensor | None]  # W, or (U, V) with W = U V^T


class ContextConfig(BaseModel):
    """The label-context regression.

    enabled: off ranks issues on the image model's probabilities alone.
    l2: penalty on the context weights `W` (per tag, as `1 / C` in scikit-learn).
    max_fit_rows: rows sampled to fit each group's regression (the fit is O(rows x tags^2)).
    min_class_count: a tag is fitted when its fit rows hold this many known positives and known
        negatives; others keep the image model's probability.
    full_up_to: taxonomies of at most this many tags fit a full `W` (a fit step costs
        O(rows x tags^2)); larger ones fit `W = U V^T` of rank `rank` (O(rows x tags x rank)).
        On the shared data's 148 tags, rank 64 found fewer injected flips than a full W
        (ranking AP 0.43 against 0.47), hence full wherever it is affordable.
    max_iter: L-BFGS iterations (on the shared data, 25 to 200 ranked the injected flips alike).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    l2: float = Field(default=2.0, gt=0.0)
    max_fit_rows: int = Field(default=20_000, ge=10)
    min_class_count: int = Field(default=2, ge=1)
    full_up_to: int = Field(default=512, ge=1)
    rank: int = Field(default=64, ge=1)
    max_iter: int = Field(default=50, ge=1)
    seed: int = 0


def label_context_probs(
    probs: np.ndarray,
    targets: np.ndarray,
    known: np.ndarray,
    groups: np.ndarray,
    config: ContextConfig | None = None,
) -> np.ndarray:
    """Context-aware out-of-fold probabilities `[N, T]` (float32).

    probs: `[N, T]` out-of-fold image-model probabilities; targets: 0/1 `[N, T]`; known: bool
    `[N, T]`; groups: `[N]` ints, the rows' cross-fit groups (at least 2 distinct values).
    Cells of tags too rare to fit in a group keep `probs`.
    """
    return label_context(probs, targets, known, groups, config)[0]


def label_context(
    probs: np.ndarray,
    targets: np.ndarray,
    known: np.ndarray,
    groups: np.ndarray,
    config: ContextConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`(probabilities [N, T] float32, fitted [N, T] bool)`, as `label_context_probs`.

    fitted: True where a regression scored the cell. Those probabilities are calibrated to the
    labels (a logistic regression fitted by maximum likelihood on them), which a posterior such
    as `tagger.clean.issues.flip_probability` needs; elsewhere the cell keeps the image model's
    own score (a focal-loss model's scores are not calibrated).
    """
    config = config or ContextConfig()
    probs = np.asarray(probs, dtype=np.float32)
    n, t = probs.shape
    groups = np.asarray(groups)
    if targets.shape != (n, t) or known.shape != (n, t) or groups.shape != (n,):
        raise ValueError(
            f"label_context_probs: probs {probs.shape}, targets {targets.shape}, known "
            f"{known.shape}, groups {groups.shape}; expected [N, T], [N, T], [N, T], [N]"
        )
    names = np.unique(groups)
    if len(names) < 2:
        raise ValueError(
            f"label_context_probs: rows come from {len(names)} group; the context regression "
            f"is fitted out of fold and needs at least 2 (cross-fit groups or folds)"
        )
    fitted_cells = np.zeros((n, t), bool)
    if not config.enabled:
        return probs.copy(), fitted_cells
    rng = np.random.default_rng(config.seed)
    out = probs.copy()
    for g in names:
        scored = np.flatnonzero(groups == g)
        fit = np.flatnonzero(groups != g)
        if len(fit) > config.max_fit_rows:
            fit = np.sort(rng.choice(fit, config.max_fit_rows, replace=False))
        a, b, weights, fitted = _fit(*_tensors(probs, targets, known, fit), config)
        cols = np.flatnonzero(fitted)
        for start in range(0, len(scored), _SCORE_ROWS):
            rows = scored[start : start + _SCORE_ROWS]
            logit, x, _, _ = _tensors(probs, targets, known, rows)
            with torch.no_grad():
                q = torch.sigmoid(_linear(logit, x, a, b, weights)).numpy()
            out[np.ix_(rows, cols)] = q[:, cols]
        fitted_cells[np.ix_(scored, cols)] = True
    return out, fitted_cells


def _tensors(
    probs: np.ndarray, targets: np.ndarray, known: np.ndarray, rows: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(logit p, x in {-1, 0, +1}, y, known)` of `rows`, float32 tensors `[rows, T]`."""
    positive = np.asarray(targets[rows]) > 0.5
    mask = np.asarray(known[rows], dtype=bool)
    x = np.where(mask, np.where(positive, 1.0, -1.0), 0.0).astype(np.float32)
    return (
        torch.from_numpy(_logit(probs[rows])),
        torch.from_numpy(x),
        torch.from_numpy(positive.astype(np.float32)),
        torch.from_numpy(mask.astype(np.float32)),
    )


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, _EPS, 1.0 - _EPS)
    return np.log(q) - np.log1p(-q)


def _linear(
    logit: torch.Tensor, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, weights: _Weights
) -> torch.Tensor:
    """`a * logit + b + x @ W`, W with a zero diagonal (no label judges itself)."""
    u, v = weights
    if v is None:
        context = x @ (u - torch.diag(torch.diagonal(u)))
    else:  # W = U V^T: its diagonal is the row-wise dot product of U and V
        context = (x @ u) @ v.T - x * (u * v).sum(1)
    return logit * a + b + context


def _fit(
    logit: torch.Tensor, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, config: ContextConfig
) -> tuple[torch.Tensor, torch.Tensor, _Weights, np.ndarray]:
    """`(a [T], b [T], weights, fitted [T] bool)`: one L-BFGS fit of every tag's regression."""
    t = logit.shape[1]
    pos = (y * mask).sum(0)
    neg = mask.sum(0) - pos
    fitted = ((pos >= config.min_class_count) & (neg >= config.min_class_count)).numpy()
    weight = mask * torch.from_numpy(fitted).float()  # known cells of fitted tags
    a = torch.ones(t)  # start from the image model itself
    b = torch.zeros(t)
    if t <= config.full_up_to:
        weights: _Weights = (torch.zeros(t, t), None)
    else:  # U small and random, V zero: the start is the image model, and V's gradient is not 0
        gen = torch.Generator().manual_seed(config.seed)
        weights = (0.01 * torch.randn(t, config.rank, generator=gen), torch.zeros(t, config.rank))
    params = [a, b] + [p for p in weights if p is not None]
    optimizer = torch.optim.LBFGS(
        params, max_iter=config.max_iter, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        loss, grads = _loss_and_grads(logit, x, y, weight, a, b, weights, config.l2)
        for param, grad in zip(params, grads, strict=True):
            param.grad = grad
        return loss

    optimizer.step(closure)
    return a, b, weights, fitted


def _loss_and_grads(
    logit: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    weight: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    weights: _Weights,
    l2: float,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The penalised, weighted binary cross-entropy and its gradients `[a, b, *weights]`.

    Written out rather than through autograd: the fit is a few passes over `[rows, T]` arrays,
    and autograd's intermediate tensors made a fit 2.8x slower (tested against autograd).
    BCE(z, y) = softplus(z) - y z, so dBCE/dz = sigmoid(z) - y.
    """
    with torch.no_grad():
        z = _linear(logit, x, a, b, weights)
        loss = ((torch.nn.functional.softplus(z) - y * z) * weight).sum()
        r = torch.sigmoid(z).sub_(y).mul_(weight)  # dloss/dz, [rows, T]
        del z
        grads = [(r * logit).sum(0), r.sum(0)]
        u, v = weights
        if v is None:
            gw = x.T @ r
            gw.fill_diagonal_(0.0)
            grads.append(gw + l2 * u)
            loss = loss + 0.5 * l2 * (u * u).sum()
        else:  # W = U V^T - diag(rowsum(U * V)): chain rule through both factors
            own = (x * r).sum(0)[:, None]  # dloss/dW[j, j]
            grads.append(x.T @ (r @ v) - own * v + l2 * u)
            grads.append(r.T @ (x @ u) - own * u + l2 * v)
            loss = loss + 0.5 * l2 * ((u * u).sum() + (v * v).sum())
    return loss, grads
