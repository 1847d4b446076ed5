"""Scaling laws: the sparse-attention logit-linear law and a Chinchilla approach-3 fitter.

(a) Logit-linear law (Sparse Frontier v1):

    logit(acc) = eps + delta_task + alpha ln N + beta ln L + gamma ln C

N = parameter count, L = sequence length in tokens, C = compression ratio (1 = dense). Task
offsets are sum-to-zero (mean delta = 0), so eps is the average task's intercept. Default fit:
binomial maximum likelihood on the counts (Newton/IRLS), because accuracies near 0 or 1 make the
logit of a raw accuracy infinite or dominated by noise; a record's count is accuracy * n, so a
non-binary mean score gives a quasi-binomial fit. method="least_squares" instead fits ordinary
least squares to empirical logits log((k + 0.5) / (n - k + 0.5)). R^2 is reported on the logit
scale against the empirical logits (comparable with the paper's 0.57-0.74) and on the accuracy
scale. An axis with one value only (say, a single length) has no estimable slope: its coefficient
is None and predictions are limited to that value.

Held-out validation: for each axis (N, L, C) in turn, the points at the axis's largest value are
held out, the law is fitted on the rest, and per task the Spearman rho (None with fewer than 3
held-out points or a constant side) and the mean absolute error in accuracy on the held-out points
are reported. A fold is skipped, with the reason, when its training part has one value of the axis.

(b) Chinchilla approach 3 (Hoffmann et al. 2022; Besiroglu et al. 2024, Epoch AI's refit):

    L(N, D) = E + A / N^alpha + B / D^beta

fitted in log space as log L = LSE(a - alpha log N, b - beta log D, e) with A = e^a, B = e^b,
E = e^e, minimising the SUM (not the mean) of Huber losses (delta 1e-3) of the log residuals by
L-BFGS-B from points of an initialisation grid (Chinchilla's 4,500-point grid by default), keeping
the best. Chinchilla started from every grid point; by default we start from the 64 grid points
with the lowest initial loss (n_starts=None restores every point; it takes minutes, not seconds).
Confidence intervals come from a seeded bootstrap: data points are resampled with replacement and
the law refitted, each refit starting from the full-data optimum and the best few grid points on
the resample; intervals are percentiles of the refits.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, logsumexp
from scipy.stats import spearmanr

from bench.sparse import SparseAnalysisError, finite_or_none, require_finite

LOGIT_LAW_FORM = "logit(acc) = eps + delta_task + alpha*ln(N) + beta*ln(L) + gamma*ln(C)"
AXES = {"N": "params", "L": "length", "C": "compression"}
SLOPES = {"N": "alpha", "L": "beta", "C": "gamma"}
RIDGE = 1e-8  # keeps Newton steps finite when a task is all-correct (separation); negligible otherwise

CHINCHILLA_FORM = "L(N, D) = E + A / N^alpha + B / D^beta"
CHINCHILLA_GRID = {
    "alpha": (0.0, 0.5, 1.0, 1.5, 2.0),
    "beta": (0.0, 0.5, 1.0, 1.5, 2.0),
    "e": (-1.0, -0.5, 0.0, 0.5, 1.0),
    "a": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "b": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
}


def _single_threaded_blas() -> contextlib.AbstractContextManager:
    """Tiny problems: a threaded BLAS only adds overhead (30x slower L-BFGS-B on a busy 2-core box)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it the fits are correct, only slower
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


# =========================================================================== (a) logit-linear law
def fit_logit_law(records: Iterable[Mapping[str, Any]], method: str = "binomial") -> dict[str, Any]:
    """Fit the logit-linear law to records with task, params, length, compression, n and
    n_correct (or accuracy)."""
    _method_name(method)
    data = _LawData.from_records(records)
    with _single_threaded_blas():
        return _fit_law(data, method)


def predict_logit_law(fit: Mapping[str, Any], task: str, params: float, length: float,
                      compression: float) -> float:
    """Predicted accuracy of a fitted law at one point."""
    if task not in fit["delta_task"]:
        raise SparseAnalysisError(f"task {task!r} was not in the fit (has {sorted(fit['delta_task'])})")
    coefs = fit["coefficients"]
    logit = coefs["eps"] + fit["delta_task"][task]
    for axis, value in (("N", params), ("L", length), ("C", compression)):
        x = math.log(_positive(AXES[axis], value))
        slope = coefs[SLOPES[axis]]
        if slope is None:  # the fit saw a single value; eps already holds its effect
            if not math.isclose(value, fit["constant_axes"][axis], rel_tol=1e-9):
                raise SparseAnalysisError(f"the fit saw one value of {AXES[axis]}; cannot predict at {value}")
            continue
        logit += slope * x
    return float(expit(logit))


def validate_logit_law(records: Iterable[Mapping[str, Any]], method: str = "binomial") -> dict[str, Any]:
    """Hold out the largest value of N, L and C in turn; per-task Spearman rho and MAE there."""
    _method_name(method)
    data = _LawData.from_records(records)
    with _single_threaded_blas():
        folds = {axis: _held_out_fold(data, axis, method) for axis in AXES}
    return {"form": LOGIT_LAW_FORM, "method": _method_name(method), "folds": folds}


class _LawData:
    """Aggregated records as arrays: task index, ln N, ln L, ln C, successes, trials."""

    def __init__(self, tasks: list[str], task_index: np.ndarray, values: np.ndarray,
                 successes: np.ndarray, trials: np.ndarray) -> None:
        self.tasks, self.task_index, self.values = tasks, task_index, values  # values: N, L, C
        self.logs = np.log(values)
        self.successes, self.trials = successes, trials

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]]) -> "_LawData":
        rows = list(records)
        if not rows:
            raise SparseAnalysisError("no records to fit")
        tasks = sorted({str(_field(r, "task", i)) for i, r in enumerate(rows)})
        index = {task: i for i, task in enumerate(tasks)}
        values, successes, trials, task_index = [], [], [], []
        for i, row in enumerate(rows):
            values.append([_positive(f"record {i} {AXES[a]}", _field(row, AXES[a], i)) for a in AXES])
            if values[-1][2] < 1:
                raise SparseAnalysisError(f"record {i}: compression must be >= 1")
            n, k = _counts(row, i)
            trials.append(n)
            successes.append(k)
            task_index.append(index[str(row["task"])])
        return cls(tasks, np.array(task_index), np.array(values, dtype=float), np.array(successes),
                   np.array(trials))

    def subset(self, mask: np.ndarray) -> "_LawData":
        return _LawData(self.tasks, self.task_index[mask], self.values[mask], self.successes[mask],
                        self.trials[mask])


def _fit_law(data: _LawData, method: str) -> dict[str, Any]:
    present = sorted(set(data.task_index.tolist()))
    tasks = [data.tasks[i] for i in present]
    varying = [j for j in range(3) if np.ptp(data.logs[:, j]) > 0]
    design, centres = _design(data, present, varying)
    if method == "binomial":
        coef, cov, converged = _binomial_mle(design, data.successes, data.trials)
    else:
        coef, cov, converged = _least_squares(design, _empirical_logit(data))
    return _law_result(data, method, tasks, present, varying, centres, coef, cov, converged)


def _design(data: _LawData, present: list[int], varying: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Columns: intercept, treatment dummies for tasks 2.., centred log axes that vary."""
    centres = data.logs.mean(axis=0)
    dummies = [(data.task_index == t).astype(float) for t in present[1:]]
    axes = [data.logs[:, j] - centres[j] for j in varying]
    return np.column_stack([np.ones(len(data.trials)), *dummies, *axes]), centres


def _binomial_mle(x: np.ndarray, k: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Newton's method (IRLS) with step halving on the binomial log-likelihood."""
    penalty = np.full(x.shape[1], RIDGE * n.sum())
    penalty[0] = 0.0
    coef = np.zeros(x.shape[1])
    coef[0] = _logit((k.sum() + 0.5) / (n.sum() + 1.0))

    def objective(c: np.ndarray) -> float:
        eta = x @ c
        return float(np.sum(n * np.logaddexp(0.0, eta) - k * eta) + 0.5 * np.sum(penalty * c * c))

    converged = False
    for _ in range(200):
        p = expit(x @ coef)
        gradient = x.T @ (k - n * p) - penalty * coef
        hessian = (x * (n * p * (1 - p))[:, None]).T @ x + np.diag(penalty)
        step = np.linalg.solve(hessian, gradient)
        current, scale = objective(coef), 1.0
        while objective(coef + scale * step) > current + 1e-12 * abs(current) and scale > 1e-8:
            scale /= 2
        coef = coef + scale * step
        if np.max(np.abs(scale * step)) < 1e-10:
            converged = True
            break
    p = expit(x @ coef)
    information = (x * (n * p * (1 - p))[:, None]).T @ x + np.diag(penalty)
    return coef, np.linalg.pinv(information), converged


def _least_squares(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    dof = len(y) - x.shape[1]
    sigma2 = float(np.sum((y - x @ coef) ** 2) / dof) if dof > 0 else float("nan")
    return coef, sigma2 * np.linalg.pinv(x.T @ x), True


def _law_result(data: _LawData, method: str, tasks: list[str], present: list[int], varying: list[int],
                centres: np.ndarray, coef: np.ndarray, cov: np.ndarray, converged: bool) -> dict[str, Any]:
    n_dummies = len(present) - 1
    treatment = np.concatenate([[0.0], coef[1:1 + n_dummies]])
    shift = treatment.mean()
    slopes: dict[str, float | None] = {SLOPES[a]: None for a in AXES}
    slope_se: dict[str, float | None] = {SLOPES[a]: None for a in AXES}
    # eps is a linear combination w . coef (intercept, the mean task offset, the centring undone);
    # w gives its standard error from the same covariance.
    eps = coef[0] + shift
    eps_weights = np.zeros(len(coef))
    eps_weights[0] = 1.0
    eps_weights[1:1 + n_dummies] = 1.0 / (n_dummies + 1)
    for offset, j in enumerate(varying):
        column = 1 + n_dummies + offset
        axis = list(AXES)[j]
        slopes[SLOPES[axis]] = float(coef[column])
        slope_se[SLOPES[axis]] = finite_or_none(math.sqrt(max(cov[column, column], 0.0)))
        eps -= coef[column] * centres[j]  # undo the centring
        eps_weights[column] = -centres[j]
    eps_se = finite_or_none(math.sqrt(max(float(eps_weights @ cov @ eps_weights), 0.0)))
    coefficients = {"eps": float(eps), **slopes}
    fit = {
        "form": LOGIT_LAW_FORM, "method": _method_name(method), "coefficients": coefficients,
        "standard_errors": {"eps": eps_se, **slope_se},
        "delta_task": {task: float(treatment[i] - shift) for i, task in enumerate(tasks)},
        "constant_axes": {list(AXES)[j]: float(data.values[0, j]) for j in range(3) if j not in varying},
        "n_points": int(len(data.trials)), "n_samples": finite_or_none(data.trials.sum()),
        "converged": converged,
    }
    fit.update(_goodness_of_fit(fit, data))
    return fit


def _goodness_of_fit(fit: Mapping[str, Any], data: _LawData) -> dict[str, float | None]:
    predicted = _predict_data(fit, data)
    observed_logit = _empirical_logit(data)
    observed_acc = data.successes / data.trials
    return {"r2_logit": _r2(observed_logit, _logit(predicted)), "r2_accuracy": _r2(observed_acc, predicted)}


def _predict_data(fit: Mapping[str, Any], data: _LawData) -> np.ndarray:
    coefs = fit["coefficients"]
    logit = np.full(len(data.trials), coefs["eps"])
    logit += np.array([fit["delta_task"][data.tasks[t]] for t in data.task_index])
    for j, axis in enumerate(AXES):
        slope = coefs[SLOPES[axis]]
        if slope is not None:
            logit += slope * data.logs[:, j]
    return expit(logit)


def _held_out_fold(data: _LawData, axis: str, method: str) -> dict[str, Any]:
    j = list(AXES).index(axis)
    largest = data.logs[:, j].max()
    test = np.isclose(data.logs[:, j], largest, rtol=0, atol=1e-12)
    held_out_value = float(data.values[test, j][0])
    fold: dict[str, Any] = {"axis": AXES[axis], "held_out_value": held_out_value,
                            "n_train": int((~test).sum()), "n_test": int(test.sum())}
    train, held = data.subset(~test), data.subset(test)
    if train.trials.size == 0 or np.ptp(train.logs[:, j]) == 0:
        return {**fold, "skipped": f"the training part has fewer than two values of {AXES[axis]}"}
    for k, other in enumerate(AXES):
        if np.ptp(train.logs[:, k]) == 0 and np.any(held.logs[:, k] != train.logs[0, k]):
            return {**fold, "skipped": f"the training part has one value of {AXES[other]}, "
                                       "the held-out part others"}
    fit = _fit_law(train, method)
    per_task: dict[str, Any] = {}
    for t, task in enumerate(data.tasks):
        rows = held.task_index == t
        if not rows.any():
            continue
        if task not in fit["delta_task"]:
            per_task[task] = {"n": int(rows.sum()), "skipped": "task absent from the training part"}
            continue
        part = held.subset(rows)
        predicted, observed = _predict_data(fit, part), part.successes / part.trials
        per_task[task] = {"n": int(rows.sum()), "spearman": _spearman(predicted, observed),
                          "mae": float(np.mean(np.abs(predicted - observed)))}
    maes = [r["mae"] for r in per_task.values() if "mae" in r]
    return {**fold, "fit_coefficients": fit["coefficients"], "fit_converged": fit["converged"], "per_task": per_task,
            "mean_mae": float(np.mean(maes)) if maes else None}


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return finite_or_none(spearmanr(a, b).statistic)


def _r2(observed: np.ndarray, predicted: np.ndarray) -> float | None:
    total = float(np.sum((observed - observed.mean()) ** 2))
    if total == 0:
        return None
    return finite_or_none(1.0 - float(np.sum((observed - predicted) ** 2)) / total)


def _empirical_logit(data: _LawData) -> np.ndarray:
    return np.log((data.successes + 0.5) / (data.trials - data.successes + 0.5))


def _logit(p: Any) -> Any:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def _method_name(method: str) -> str:
    names = {"binomial": "binomial maximum likelihood on counts (IRLS)",
             "least_squares": "ordinary least squares on empirical logits"}
    if method not in names:
        raise SparseAnalysisError(f"method must be 'binomial' or 'least_squares', got {method!r}")
    return names[method]


def _counts(row: Mapping[str, Any], index: int) -> tuple[float, float]:
    n = require_finite(f"record {index} n", _field(row, "n", index))
    if n <= 0:
        raise SparseAnalysisError(f"record {index}: n must be positive, got {n}")
    if "n_correct" in row:
        k = require_finite(f"record {index} n_correct", row["n_correct"])
    elif "accuracy" in row:
        k = require_finite(f"record {index} accuracy", row["accuracy"]) * n
    else:
        raise SparseAnalysisError(f"record {index} needs n_correct or accuracy")
    if not 0 <= k <= n:
        raise SparseAnalysisError(f"record {index}: correct count {k} outside [0, {n}]")
    return n, k


def _field(row: Mapping[str, Any], key: str, index: int) -> Any:
    if key not in row:
        raise SparseAnalysisError(f"record {index} lacks {key!r}")
    return row[key]


def _positive(name: str, value: Any) -> float:
    number = require_finite(name, value)
    if number <= 0:
        raise SparseAnalysisError(f"{name} must be positive, got {value!r}")
    return number


# =========================================================================== (b) Chinchilla approach 3
def fit_chinchilla(params: Sequence[float], tokens: Sequence[float], losses: Sequence[float],
                   huber_delta: float = 1e-3, grid: Mapping[str, Sequence[float]] | None = None,
                   n_starts: int | None = 64, bootstrap: int = 0, bootstrap_starts: int = 2,
                   seed: int = 0, ci: float = 0.95) -> dict[str, Any]:
    """Fit L = E + A/N^alpha + B/D^beta; optional bootstrap CIs. See the module docstring.

    n_starts: run L-BFGS-B from the n_starts grid points with the lowest initial loss (None: from
    every grid point, as Chinchilla did; 4,500 points take minutes).
    """
    log_n, log_d, log_l = _chinchilla_data(params, tokens, losses)
    delta = _positive("huber_delta", huber_delta)
    if n_starts is not None and (not isinstance(n_starts, int) or n_starts < 1):
        raise SparseAnalysisError(f"n_starts must be a positive integer or None, got {n_starts!r}")
    grid_points = _grid_points(grid or CHINCHILLA_GRID)
    starts = _best_starts(grid_points, log_n, log_d, log_l, delta, n_starts)
    with _single_threaded_blas():
        theta, objective, converged = _best_fit(log_n, log_d, log_l, delta, starts)
    result: dict[str, Any] = {
        "form": CHINCHILLA_FORM, "loss": "Huber(delta) on log residuals, summed", "huber_delta": delta,
        "optimizer": "L-BFGS-B from grid starts, best kept", "grid_size": len(grid_points),
        "n_starts": len(starts),
        "n_points": int(log_l.size), **_named(theta), "objective": objective, "converged": converged,
    }
    if bootstrap:
        with _single_threaded_blas():
            result["bootstrap"] = _bootstrap(log_n, log_d, log_l, delta, theta, grid_points, bootstrap,
                                             bootstrap_starts, seed, ci)
    return result


def chinchilla_loss(fit: Mapping[str, Any], params: Any, tokens: Any) -> Any:
    """Predicted loss E + A/N^alpha + B/D^beta of a fit."""
    n, d = np.asarray(params, dtype=float), np.asarray(tokens, dtype=float)
    return fit["E"] + fit["A"] / n ** fit["alpha"] + fit["B"] / d ** fit["beta"]


def _chinchilla_data(params: Sequence[float], tokens: Sequence[float],
                     losses: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arrays = [np.asarray(v, dtype=float) for v in (params, tokens, losses)]
    if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 1:
        raise SparseAnalysisError("params, tokens and losses must be 1-D and the same length")
    if arrays[0].size < 6:
        raise SparseAnalysisError(f"need at least 6 points to fit 5 parameters, got {arrays[0].size}")
    for name, a in zip(("params", "tokens", "losses"), arrays):
        if not np.all(np.isfinite(a)) or np.any(a <= 0):
            raise SparseAnalysisError(f"{name} must be finite and positive")
    return tuple(np.log(a) for a in arrays)  # type: ignore[return-value]


def _objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray,
               delta: float) -> tuple[float, np.ndarray]:
    """Summed Huber loss of log residuals and its gradient in (a, b, e, alpha, beta)."""
    a, b, e, alpha, beta = theta
    term_n, term_d = a - alpha * log_n, b - beta * log_d
    top = np.maximum(np.maximum(term_n, term_d), e)  # log-sum-exp, written out: called ~1e5 times
    w_n, w_d, w_e = np.exp(term_n - top), np.exp(term_d - top), np.exp(e - top)
    total = w_n + w_d + w_e
    residual = top + np.log(total) - log_l
    absolute = np.abs(residual)
    value = np.where(absolute <= delta, 0.5 * residual * residual, delta * (absolute - 0.5 * delta)).sum()
    slope = np.clip(residual, -delta, delta) / total  # dLoss/dresidual times the softmax denominator
    g_n, g_d = slope * w_n, slope * w_d
    gradient = np.array([g_n.sum(), g_d.sum(), (slope * w_e).sum(), -(g_n @ log_n), -(g_d @ log_d)])
    return float(value), gradient


def _grid_objectives(grid: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray,
                     delta: float) -> np.ndarray:
    """The summed Huber loss at every grid point at once (to rank starts)."""
    a, b, e, alpha, beta = (grid[:, i:i + 1] for i in range(5))
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.broadcast_to(e, (len(grid), log_n.size))])
    residual = np.abs(logsumexp(terms, axis=0) - log_l)
    return np.where(residual <= delta, 0.5 * residual ** 2, delta * (residual - 0.5 * delta)).sum(axis=1)


def _best_starts(grid: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray,
                 delta: float, count: int | None) -> np.ndarray:
    if count is None:
        return grid
    if count == 0:
        return grid[:0]
    if not isinstance(count, int) or count < 0:
        raise SparseAnalysisError(f"the number of starts must be a non-negative integer, got {count!r}")
    return grid[np.argsort(_grid_objectives(grid, log_n, log_d, log_l, delta), kind="stable")[:count]]


def _grid_points(grid: Mapping[str, Sequence[float]]) -> np.ndarray:
    missing = [key for key in ("a", "b", "e", "alpha", "beta") if key not in grid]
    if missing:
        raise SparseAnalysisError(f"initialisation grid lacks {missing}")
    return np.array(list(itertools.product(grid["a"], grid["b"], grid["e"], grid["alpha"], grid["beta"])),
                    dtype=float)


def _minimise(start: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray,
              delta: float) -> tuple[np.ndarray, float, bool]:
    result = minimize(_objective, start, args=(log_n, log_d, log_l, delta), jac=True, method="L-BFGS-B",
                      options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-12})
    return result.x, float(result.fun), bool(result.success)


def _best_fit(log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray, delta: float,
              starts: np.ndarray) -> tuple[np.ndarray, float, bool]:
    best: tuple[np.ndarray, float, bool] | None = None
    for start in starts:
        theta, value, ok = _minimise(start, log_n, log_d, log_l, delta)
        if np.all(np.isfinite(theta)) and (best is None or value < best[1]):
            best = (theta, value, ok)
    if best is None:
        raise SparseAnalysisError("no start converged to a finite fit")
    return best


def _bootstrap(log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray, delta: float,
               theta: np.ndarray, grid: np.ndarray, replicates: int, n_grid_starts: int, seed: int,
               ci: float) -> dict[str, Any]:
    if not 0 < ci < 1:
        raise SparseAnalysisError(f"ci must be in (0, 1), got {ci}")
    rng = np.random.default_rng(seed)
    fits = []
    for _ in range(int(replicates)):
        pick = rng.integers(0, log_l.size, log_l.size)
        ln, ld, ll = log_n[pick], log_d[pick], log_l[pick]
        starts = np.vstack([theta, _best_starts(grid, ln, ld, ll, delta, n_grid_starts)])
        fitted, _, _ = _best_fit(ln, ld, ll, delta, starts)
        fits.append(list(_named(fitted).values()))
    table = np.array(fits)
    tail = (1 - ci) / 2 * 100
    names = list(_named(theta))
    return {"replicates": int(replicates), "seed": seed, "level": ci, "method": "percentile",
            "intervals": {name: [float(np.percentile(table[:, i], tail)),
                                 float(np.percentile(table[:, i], 100 - tail))]
                          for i, name in enumerate(names)},
            "median": {name: float(np.median(table[:, i])) for i, name in enumerate(names)}}


def _named(theta: np.ndarray) -> dict[str, float]:
    a, b, e, alpha, beta = (float(v) for v in theta)
    return {"E": math.exp(e), "A": math.exp(a), "B": math.exp(b), "alpha": alpha, "beta": beta}
