"""From-scratch reference implementations of the nine optimizers, to check torch.optim (and to read) against.

Written from the update rules in the seed documents (000: all first-order methods; 003: adaptive methods; 004:
Adam vs AdamW) on plain tensors, with torch.optim's defaults. Where torch's algorithm differs from a seed's
formula the reference follows torch, and the class docstring says "Differs from seed ..." with both forms.
No seed gives NAdam's or L-BFGS's update rule (seed 001 only outlines them); those follow torch's documented algorithms.
The seeds are not distributed: docs/optimizers.md holds each rule, default and seed difference cited here, with sources.

Use: `opt = make_reference("adam", params, lr=1e-2)` (or `REFERENCE["adam"](params, ...)`), then
`opt.step(grads)` with one gradient per parameter; the parameters are updated in place and per-parameter
state lives in `opt.state[i]`. L-BFGS instead takes `opt.step(closure)` with `closure(params) -> (loss, grads)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from optimlight.plugin.errors import ConfigError


def _signed_grad(grad: Tensor, param: Tensor, weight_decay: float, maximize: bool) -> Tensor:
    """g_t = (-)∇f(θ_{t-1}) + λθ_{t-1}: the sign for maximize, then coupled (L2) weight decay, as the seeds write it."""
    g = -grad if maximize else grad
    return g.add(param, alpha=weight_decay) if weight_decay else g


class _FirstOrder:
    """Parameters updated in place from one gradient each; `state[i]` is parameter i's state, `t` the step count.

    A subclass gives `_update(param, grad, state)`, step t's rule, and `_init_state(param)` if it keeps state."""

    def __init__(self, params: Sequence[Tensor]):
        self.params = list(params)
        self.state = [self._init_state(p) for p in self.params]
        self.t = 0

    def _init_state(self, param: Tensor) -> dict:
        return {}

    @torch.no_grad()
    def step(self, grads: Sequence[Tensor]) -> None:
        """One update of every parameter from its gradient (at the current parameters)."""
        self.t += 1
        for param, grad, state in zip(self.params, grads, self.state, strict=True):
            self._update(param, grad, state)


class SGD(_FirstOrder):
    """θ_t = θ_{t-1} - γ·u_t, with u_t = g_t (μ = 0), b_t (momentum) or g_t + μb_t (nesterov), where
    b_1 = g_1 and b_t = μb_{t-1} + (1-τ)g_t: the first step skips dampening. As seed 000, which matches torch.
    Sources: docs/optimizers.md#sgd."""

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False):
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov momentum needs momentum > 0 and dampening = 0")
        self.lr, self.momentum, self.dampening, self.nesterov = lr, momentum, dampening, nesterov
        self.weight_decay, self.maximize = weight_decay, maximize
        super().__init__(params)

    def _update(self, param, grad, state):
        g = _signed_grad(grad, param, self.weight_decay, self.maximize)
        if self.momentum:
            if self.t == 1:
                state["momentum_buffer"] = g.clone()
            else:
                state["momentum_buffer"].mul_(self.momentum).add_(g, alpha=1 - self.dampening)
            b = state["momentum_buffer"]
            g = g.add(b, alpha=self.momentum) if self.nesterov else b
        param.add_(g, alpha=-self.lr)


class ASGD(_FirstOrder):
    """Averaged SGD in torch's form, for step t = 1, 2, ...:

        η_t = γ / (1 + λγ(t-1))^α,   μ_t = 1 / max(1, t-1-t0)
        θ_t = θ_{t-1}(1 - λη_t) - η_t g_t
        ax_t = ax_{t-1} + μ_t(θ_t - ax_{t-1})            (so ax_t = θ_t while μ_t = 1)

    Differs from seed 000 in three places. (1) The seed's η_t = 1/(γ(1+λγt)^α) is a typo: torch's rate is
    γ/(1+λγt)^α, which starts at γ. (2) torch computes η and μ at the end of each step from that step's t, so
    step t uses the values for t-1 (η_1 = γ, μ_1 = 1) and averaging starts one step later than the seed's
    μ_t = 1/max(1, t-t0). (3) torch also shrinks θ by (1 - λη_t) before the gradient step; the seed has no such term.
    Sources: docs/optimizers.md#asgd.
    """

    def __init__(self, params, lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0.0, maximize=False):
        self.lr, self.lambd, self.alpha, self.t0 = lr, lambd, alpha, t0
        self.weight_decay, self.maximize = weight_decay, maximize
        super().__init__(params)

    def _init_state(self, param):
        return {"ax": torch.zeros_like(param)}

    def _update(self, param, grad, state):
        g = _signed_grad(grad, param, self.weight_decay, self.maximize)
        eta = self.lr / (1 + self.lambd * self.lr * (self.t - 1)) ** self.alpha
        mu = 1 / max(1, self.t - 1 - self.t0)
        param.mul_(1 - self.lambd * eta).add_(g, alpha=-eta)
        state["ax"].lerp_(param, mu)


class Adagrad(_FirstOrder):
    """γ̃_t = γ/(1 + (t-1)η),  G_t = G_{t-1} + g_t² (G_0 = initial_accumulator_value),
    θ_t = θ_{t-1} - γ̃_t g_t/(√G_t + ε).

    As seed 000 and torch. Differs from seed 003, which writes √(G_t + ε) with ε = 1e-8: torch adds ε = 1e-10
    outside the root. Sources: docs/optimizers.md#adagrad."""

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10, maximize=False):
        self.lr, self.lr_decay, self.initial_accumulator_value, self.eps = lr, lr_decay, initial_accumulator_value, eps
        self.weight_decay, self.maximize = weight_decay, maximize
        super().__init__(params)

    def _init_state(self, param):
        return {"sum": torch.full_like(param, self.initial_accumulator_value)}

    def _update(self, param, grad, state):
        g = _signed_grad(grad, param, self.weight_decay, self.maximize)
        clr = self.lr / (1 + (self.t - 1) * self.lr_decay)
        state["sum"].addcmul_(g, g)
        param.addcdiv_(g, state["sum"].sqrt() + self.eps, value=-clr)


class Adadelta(_FirstOrder):
    """v_t = ρv_{t-1} + (1-ρ)g_t²,  Δ_t = √(u_{t-1} + ε)/√(v_t + ε)·g_t,  u_t = ρu_{t-1} + (1-ρ)Δ_t²,
    θ_t = θ_{t-1} - γΔ_t.

    As seed 000 and torch, ε inside both roots. Zeiler's Adadelta has no learning rate; torch (and seed 000)
    scale Δ_t by γ, whose default 1.0 gives the paper's rule.
    Sources: docs/optimizers.md#adadelta."""

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False):
        self.lr, self.rho, self.eps, self.weight_decay, self.maximize = lr, rho, eps, weight_decay, maximize
        super().__init__(params)

    def _init_state(self, param):
        return {"square_avg": torch.zeros_like(param), "acc_delta": torch.zeros_like(param)}

    def _update(self, param, grad, state):
        g = _signed_grad(grad, param, self.weight_decay, self.maximize)
        state["square_avg"].lerp_(g * g, 1 - self.rho)
        delta = (state["acc_delta"] + self.eps).sqrt() / (state["square_avg"] + self.eps).sqrt() * g
        state["acc_delta"].lerp_(delta * delta, 1 - self.rho)
        param.add_(delta, alpha=-self.lr)


class RMSprop(_FirstOrder):
    """v_t = αv_{t-1} + (1-α)g_t²;  centered: ḡ_t = αḡ_{t-1} + (1-α)g_t and ṽ_t = v_t - ḡ_t², else ṽ_t = v_t;
    s_t = g_t/(√ṽ_t + ε);  θ_t = θ_{t-1} - γb_t with b_t = μb_{t-1} + s_t (momentum), else θ_{t-1} - γs_t.

    Differs from seed 000, which writes √(ṽ_t + ε): torch adds ε outside the root, as seed 004 does.
    Sources: docs/optimizers.md#rmsprop."""

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, maximize=False):
        self.lr, self.alpha, self.eps, self.momentum, self.centered = lr, alpha, eps, momentum, centered
        self.weight_decay, self.maximize = weight_decay, maximize
        super().__init__(params)

    def _init_state(self, param):
        state = {"square_avg": torch.zeros_like(param)}
        if self.momentum > 0:
            state["momentum_buffer"] = torch.zeros_like(param)
        if self.centered:
            state["grad_avg"] = torch.zeros_like(param)
        return state

    def _update(self, param, grad, state):
        g = _signed_grad(grad, param, self.weight_decay, self.maximize)
        v = state["square_avg"].lerp_(g * g, 1 - self.alpha)
        if self.centered:
            v = v - state["grad_avg"].lerp_(g, 1 - self.alpha) ** 2
        s = g / (v.sqrt() + self.eps)
        if self.momentum > 0:
            s = state["momentum_buffer"].mul_(self.momentum).add_(s)
        param.add_(s, alpha=-self.lr)


class Adam(_FirstOrder):
    """m_t = β1m_{t-1} + (1-β1)g_t,  v_t = β2v_{t-1} + (1-β2)g_t²,  amsgrad: v_t ← max(v_{t-1}^max, v_t);
    θ_t = θ_{t-1} - γ m̂_t/(√v̂_t + ε), with m̂_t = m_t/(1-β1^t), v̂_t = v_t/(1-β2^t).

    weight_decay is coupled L2 (added to g_t) unless decoupled_weight_decay, which first shrinks θ by (1 - γλ)
    and leaves g_t alone: that is AdamW. Differs from seed 000, which writes √(v̂_t + ε): torch adds ε outside
    the root, as seeds 003 and 004 do. Sources: docs/optimizers.md#adam."""

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.0,
        amsgrad=False,
        maximize=False,
        decoupled_weight_decay=False,
    ):
        self.lr, (self.beta1, self.beta2), self.eps, self.amsgrad = lr, betas, eps, amsgrad
        self.weight_decay, self.decoupled_weight_decay, self.maximize = weight_decay, decoupled_weight_decay, maximize
        super().__init__(params)

    def _init_state(self, param):
        state = {"exp_avg": torch.zeros_like(param), "exp_avg_sq": torch.zeros_like(param)}
        if self.amsgrad:
            state["max_exp_avg_sq"] = torch.zeros_like(param)
        return state

    def _update(self, param, grad, state):
        if self.decoupled_weight_decay:
            param.mul_(1 - self.lr * self.weight_decay)
        g = _signed_grad(grad, param, 0.0 if self.decoupled_weight_decay else self.weight_decay, self.maximize)
        m = state["exp_avg"].lerp_(g, 1 - self.beta1)
        v = state["exp_avg_sq"].mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)
        if self.amsgrad:
            v = torch.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
        denom = v.sqrt() / math.sqrt(1 - self.beta2**self.t) + self.eps
        param.addcdiv_(m, denom, value=-self.lr / (1 - self.beta1**self.t))


class AdamW(Adam):
    """Adam with decoupled weight decay (default λ = 1e-2): θ ← θ(1 - γλ), then the Adam step on the plain gradient.

    As seeds 000 and 003 and torch. Differs from seed 004, which applies the decay after the Adam step,
    θ_t = (θ_{t-1} - Adam step)(1 - γλ): torch decays first, θ_t = θ_{t-1}(1 - γλ) - Adam step.
    Sources: docs/optimizers.md#adamw."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, maximize=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay=True)


class NAdam(_FirstOrder):
    """Adam with Nesterov momentum, torch's form (no seed gives NAdam's rule; docs/optimizers.md#nadam):

        μ_t = β1(1 - ½·0.96^{tψ})                                 (ψ = momentum_decay)
        m_t, v_t as Adam with the constant β1, β2;  d_t = √(v_t/(1-β2^t)) + ε
        θ_t = θ_{t-1} - γ(1-μ_t)/(1 - Π_{i≤t}μ_i)·g_t/d_t - γμ_{t+1}/(1 - Π_{i≤t+1}μ_i)·m_t/d_t

    The running product Π_{i≤t}μ_i is state["mu_product"]. Weight decay as Adam's (coupled L2 or decoupled)."""

    def __init__(
        self,
        params,
        lr=2e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.0,
        momentum_decay=4e-3,
        decoupled_weight_decay=False,
        maximize=False,
    ):
        self.lr, (self.beta1, self.beta2), self.eps, self.momentum_decay = lr, betas, eps, momentum_decay
        self.weight_decay, self.decoupled_weight_decay, self.maximize = weight_decay, decoupled_weight_decay, maximize
        super().__init__(params)

    def _init_state(self, param):
        return {"mu_product": 1.0, "exp_avg": torch.zeros_like(param), "exp_avg_sq": torch.zeros_like(param)}

    def _momentum(self, t: int) -> float:
        return self.beta1 * (1.0 - 0.5 * 0.96 ** (t * self.momentum_decay))

    def _update(self, param, grad, state):
        if self.decoupled_weight_decay:
            param.mul_(1 - self.lr * self.weight_decay)
        g = _signed_grad(grad, param, 0.0 if self.decoupled_weight_decay else self.weight_decay, self.maximize)
        mu, mu_next = self._momentum(self.t), self._momentum(self.t + 1)
        state["mu_product"] *= mu
        m = state["exp_avg"].lerp_(g, 1 - self.beta1)
        v = state["exp_avg_sq"].mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)
        denom = (v / (1 - self.beta2**self.t)).sqrt() + self.eps
        param.addcdiv_(g, denom, value=-self.lr * (1 - mu) / (1 - state["mu_product"]))
        param.addcdiv_(m, denom, value=-self.lr * mu_next / (1 - state["mu_product"] * mu_next))


Closure = Callable[[list[Tensor]], tuple[float, Sequence[Tensor]]]


class _Trial(NamedTuple):
    """One point of a line search along d: step t, loss f, flat gradient g and directional derivative gtd = g·d."""

    t: float
    f: float
    g: Tensor
    gtd: float


def _cubic_minimum(a: _Trial, b: _Trial, bounds: tuple[float, float] | None = None) -> float:
    """Minimiser of the cubic through (t, f, f') at a and b, clamped to bounds (default: between a.t and b.t);
    the bounds' midpoint when that cubic has no minimum. torch's port of minFunc's polyinterp, in plain float
    division: torch's float / tensor multiplies by a reciprocal instead, so the two can differ in the last bit."""
    lo, hi = bounds if bounds is not None else sorted((a.t, b.t))
    if a.t > b.t:
        a, b = b, a
    d1 = a.gtd + b.gtd - 3 * (a.f - b.f) / (a.t - b.t)
    d2_square = d1**2 - a.gtd * b.gtd
    if d2_square < 0:
        return (lo + hi) / 2.0
    d2 = math.sqrt(d2_square)
    t = b.t - (b.t - a.t) * ((b.gtd + d2 - d1) / (b.gtd - a.gtd + 2 * d2))
    return min(max(t, lo), hi)


def _strong_wolfe(
    evaluate: Callable[[float], tuple[float, Tensor]],
    d: Tensor,
    start: _Trial,
    t: float,
    max_ls: int,
    c1: float = 1e-4,
    c2: float = 0.9,
    tolerance_change: float = 1e-9,
) -> tuple[_Trial, int]:
    """A step t along d with f(t) <= f(0) + c1·t·f'(0) and |f'(t)| <= c2·|f'(0)| (strong Wolfe), in at most
    max_ls evaluations after the first at t: extrapolate by cubics until a bracket must hold such a point, then
    zoom into it by cubic interpolation kept 10% away from its ends (torch's port of minFunc's lswolfe).
    Returns the best trial and the number of evaluations."""

    def trial_at(step: float) -> _Trial:
        f, g = evaluate(step)
        return _Trial(step, f, g, float(g.dot(d)))

    def sufficient_decrease(trial: _Trial) -> bool:
        return trial.f <= start.f + c1 * trial.t * start.gtd

    def curvature(trial: _Trial) -> bool:
        return abs(trial.gtd) <= -c2 * start.gtd

    d_norm = float(d.abs().max())
    prev, trial = start, trial_at(t)
    evals, ls_iter, done = 1, 0, False
    while ls_iter < max_ls:
        if not sufficient_decrease(trial) or (ls_iter > 1 and trial.f >= prev.f):
            bracket = [prev, trial]
            break
        if curvature(trial):
            bracket, done = [trial], True
            break
        if trial.gtd >= 0:
            bracket = [prev, trial]
            break
        t = _cubic_minimum(prev, trial, bounds=(trial.t + 0.01 * (trial.t - prev.t), trial.t * 10))
        prev, trial = trial, trial_at(t)
        evals, ls_iter = evals + 1, ls_iter + 1
    if ls_iter == max_ls:
        bracket = [start, trial]

    insufficient_progress = False
    low, high = (0, 1) if bracket[0].f <= bracket[-1].f else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1].t - bracket[0].t) * d_norm < tolerance_change:
            break
        t = _cubic_minimum(bracket[0], bracket[1])
        t_min, t_max = sorted((bracket[0].t, bracket[1].t))
        margin = 0.1 * (t_max - t_min)
        if min(t_max - t, t - t_min) < margin:
            if insufficient_progress or t >= t_max or t <= t_min:
                t = t_max - margin if abs(t - t_max) < abs(t - t_min) else t_min + margin
                insufficient_progress = False
            else:
                insufficient_progress = True
        else:
            insufficient_progress = False
        trial = trial_at(t)
        evals, ls_iter = evals + 1, ls_iter + 1
        if not sufficient_decrease(trial) or trial.f >= bracket[low].f:
            bracket[high] = trial
            low, high = (0, 1) if bracket[0].f <= bracket[1].f else (1, 0)
        else:
            if curvature(trial):
                done = True
            elif trial.gtd * (bracket[high].t - bracket[low].t) >= 0:
                bracket[high] = bracket[low]
            bracket[low] = trial
    return bracket[low], evals


class LBFGS:
    """L-BFGS on the flattened parameters, torch's variant of minFunc's (no seed gives it; docs/optimizers.md#lbfgs).

    Direction d = -H·g by the two-loop recursion over the last history_size pairs (s = t·d, y = Δg), a pair kept
    only when y·s > 1e-10, with H_0 = (y·s / y·y)·I; the very first direction is -g with step
    t = min(1, 1/‖g‖₁)·γ, later ones take t = γ. Without a line search θ ← θ + t·d; with
    line_search_fn="strong_wolfe" t comes from the strong-Wolfe search, whose bracket tolerance is torch's fixed
    1e-9, not tolerance_change. One `step` runs at most max_iter iterations and max_eval loss evaluations and
    stops early when max|g| <= tolerance_grad, g·d > -tolerance_change, max|t·d| <= tolerance_change or the loss
    changes by less than tolerance_change. The history, d, t and last gradient carry over to the next `step`.

    `step(closure)` takes closure(params) -> (loss, grads), the loss and gradients at the given parameter values."""

    def __init__(
        self,
        params,
        lr=1.0,
        max_iter=20,
        max_eval=None,
        tolerance_grad=1e-7,
        tolerance_change=1e-9,
        history_size=100,
        line_search_fn=None,
        maximize=False,
    ):
        if line_search_fn not in (None, "strong_wolfe"):
            raise ValueError(f"line_search_fn={line_search_fn!r}: only None and 'strong_wolfe' exist")
        self.params = list(params)
        self.lr, self.max_iter, self.max_eval = lr, max_iter, max_iter * 5 // 4 if max_eval is None else max_eval
        self.tolerance_grad, self.tolerance_change = tolerance_grad, tolerance_change
        self.history_size, self.line_search_fn, self.maximize = history_size, line_search_fn, maximize
        self.state = {
            "func_evals": 0,
            "n_iter": 0,
            "old_dirs": [],
            "old_stps": [],
            "ro": [],
            "H_diag": 1.0,
            "d": None,
            "t": None,
            "prev_flat_grad": None,
            "prev_loss": None,
        }

    def _moved(self, t: float, d: Tensor) -> list[Tensor]:
        """The parameters θ + t·d, for a flat d."""
        chunks = d.split([p.numel() for p in self.params])
        return [p.add(chunk.view_as(p), alpha=t) for p, chunk in zip(self.params, chunks)]

    def _evaluate(self, closure: Closure, params: list[Tensor]) -> tuple[float, Tensor]:
        """Loss and flat gradient at params, both negated for maximize so that the rest always minimises.
        The closure runs with autograd on, as torch's does, so it may differentiate by backward or autograd.grad."""
        with torch.enable_grad():
            loss, grads = closure(params)
        flat = torch.cat([g.reshape(-1) for g in grads])
        return (-float(loss), -flat) if self.maximize else (float(loss), flat)

    def _remember(self, y: Tensor, s: Tensor) -> None:
        """Add the pair (s, y), dropping the oldest beyond history_size; skip it unless y·s > 1e-10 (curvature)."""
        st, ys = self.state, float(y.dot(s))
        if ys <= 1e-10:
            return
        if len(st["old_dirs"]) == self.history_size:
            for key in ("old_dirs", "old_stps", "ro"):
                st[key].pop(0)
        st["old_dirs"].append(y)
        st["old_stps"].append(s)
        st["ro"].append(1.0 / ys)
        st["H_diag"] = ys / float(y.dot(y))

    def _direction(self, g: Tensor) -> Tensor:
        """d = -H·g by the two-loop recursion: q = -g less α_i·y_i newest first, then r = H_0·q plus (α_i - β_i)·s_i."""
        st = self.state
        pairs = list(zip(st["old_stps"], st["old_dirs"], st["ro"]))
        q, alphas = g.neg(), []
        for s, y, rho in reversed(pairs):
            alphas.append(float(s.dot(q)) * rho)
            q.add_(y, alpha=-alphas[-1])
        r = q * st["H_diag"]
        for (s, y, rho), a in zip(pairs, reversed(alphas)):
            r.add_(s, alpha=a - float(y.dot(r)) * rho)
        return r

    @torch.no_grad()
    def step(self, closure: Closure) -> float:
        """Up to max_iter L-BFGS iterations from the current parameters; returns the loss closure gave there."""
        st = self.state
        loss, g = self._evaluate(closure, self.params)
        orig_loss = -loss if self.maximize else loss
        evals = 1
        st["func_evals"] += 1
        if g.abs().max() <= self.tolerance_grad:
            return orig_loss
        d, t = st["d"], st["t"]
        for n_iter in range(1, self.max_iter + 1):
            st["n_iter"] += 1
            if st["n_iter"] == 1:
                d = g.neg()
            else:
                self._remember(g.sub(st["prev_flat_grad"]), d.mul(t))
                d = self._direction(g)
            st["prev_flat_grad"], st["prev_loss"] = g.clone(), loss
            t = min(1.0, 1.0 / float(g.abs().sum())) * self.lr if st["n_iter"] == 1 else self.lr
            gtd = float(g.dot(d))
            if gtd > -self.tolerance_change:
                break
            if self.line_search_fn:
                best, step_evals = _strong_wolfe(
                    lambda step: self._evaluate(closure, self._moved(step, d)),  # noqa: B023 - called within this iteration
                    d,
                    _Trial(0.0, loss, g, gtd),
                    t,
                    max_ls=self.max_eval - evals,
                )
                loss, g, t = best.f, best.g, best.t
            for p, moved in zip(self.params, self._moved(t, d)):
                p.copy_(moved)
            if not self.line_search_fn:
                # A fixed step re-evaluates the loss, except after the last iteration, where nothing would use it.
                step_evals = 0 if n_iter == self.max_iter else 1
                if step_evals:
                    loss, g = self._evaluate(closure, self.params)
            evals += step_evals
            st["func_evals"] += step_evals
            if (
                n_iter == self.max_iter
                or evals >= self.max_eval
                or g.abs().max() <= self.tolerance_grad
                or d.mul(t).abs().max() <= self.tolerance_change
                or abs(loss - st["prev_loss"]) < self.tolerance_change
            ):
                break
        st["d"], st["t"] = d, t
        return orig_loss


REFERENCE = {
    "sgd": SGD,
    "asgd": ASGD,
    "adagrad": Adagrad,
    "adadelta": Adadelta,
    "rmsprop": RMSprop,
    "adam": Adam,
    "adamw": AdamW,
    "nadam": NAdam,
    "lbfgs": LBFGS,
}


def make_reference(name: str, params: Sequence[Tensor], **options):
    """The reference optimizer `name` (a REFERENCE key, any case) over `params`, with torch.optim's option names."""
    if name.lower() not in REFERENCE:
        raise ConfigError("optimizer", name, f"one of {sorted(REFERENCE)}")
    return REFERENCE[name.lower()](params, **options)
