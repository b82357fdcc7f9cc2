"""tests/reference.py (the test oracle) against torch.optim: the same 20 float64 steps on a small non-convex loss, over each
optimizer's option grid, must leave parameters (and ASGD's average) within 1e-10 of torch's.

The references follow torch where the seed documents' formulas differ from it, and test_seed_formula_is_not_torchs
shows that each such difference is far above the tolerance, so these grids would catch a reference written from
the seed's form instead:
  - Adam (seed 000) writes √(v̂+ε), RMSprop (seed 000) √(ṽ+ε), Adagrad (seed 003) √(G+ε): torch adds ε outside the root.
  - ASGD (seed 000) writes η_t = 1/(γ(1+λγt)^α), a typo for γ/(1+λγt)^α; torch also shrinks θ by (1-λη) and uses
    step t-1's η and μ at step t, so its averaging starts one step after the seed's (the ASGD grid checks `ax`).
  - AdamW (seed 004) applies the decay after the Adam step; torch (and seeds 000, 003) decay first.
No seed covers NAdam or L-BFGS; their references follow torch's documented algorithms.
"""

from __future__ import annotations

import inspect
import itertools

import pytest
import torch

from optimlight.plugin.errors import ConfigError
from tests.conftest import TORCH_OPTIMIZERS
from tests.reference import REFERENCE, make_reference

STEPS, TOL = 20, 1e-10
TORCH = TORCH_OPTIMIZERS

_gen = torch.Generator().manual_seed(0)
X = torch.randn(16, 3, generator=_gen, dtype=torch.float64)
Y = torch.randn(16, generator=_gen, dtype=torch.float64)
INIT = (  # W (3x4), b (4,), v (4,)
    0.5 * torch.randn(3, 4, generator=_gen, dtype=torch.float64),
    0.1 * torch.randn(4, generator=_gen, dtype=torch.float64),
    torch.randn(4, generator=_gen, dtype=torch.float64),
)


@pytest.fixture(autouse=True)
def float64_default():
    """torch keeps some scalar state (ASGD's η and μ, NAdam's μ product) in the *default* dtype: with float64
    parameters but a float32 default those are rounded to float32, which moves ASGD's and NAdam's 20-step paths
    here by 2e-9 and 3e-10, past TOL."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def loss_fn(params, sign: float):
    """Mean squared error of a one-hidden-layer tanh net: non-convex. sign = -1 gives maximize runs a bounded goal."""
    w, b, v = params
    return sign * ((torch.tanh(X @ w + b) @ v - Y) ** 2).mean()


def wiggly_loss(params, sign: float):
    """loss_fn plus 0.1·Σsin(8θ) + 0.05·‖θ‖²: shallow minima all along each search line, so that L-BFGS's strong-Wolfe
    search extrapolates, zooms, swaps bracket ends and falls back from the cubic, around a bounded minimum."""
    x = torch.cat([p.reshape(-1) for p in params])
    return loss_fn(params, sign) + sign * (0.1 * torch.sin(8 * x).sum() + 0.05 * (x**2).sum())


def loss_and_grads(params, sign: float, loss_of=loss_fn):
    """The reference's side: loss and gradients at plain tensors."""
    leaves = [p.detach().requires_grad_() for p in params]
    loss = loss_of(leaves, sign)
    return loss.item(), list(torch.autograd.grad(loss, leaves))


def max_diff(a, b) -> float:
    return max((x.detach() - y.detach()).abs().max().item() for x, y in zip(a, b, strict=True))


def assert_same_path(theirs, ours):
    moved = max_diff(theirs, INIT)
    assert moved > 1e-3, f"torch's parameters moved only {moved:.1e}: the case would test nothing"
    assert max_diff(theirs, ours) <= TOL


def run_both(name: str, options: dict, steps: int = STEPS):
    """`steps` steps of torch.optim's and the reference's `name`, each from its own gradients; both optimizers."""
    sign = -1.0 if options.get("maximize") else 1.0
    theirs = [p.clone().requires_grad_() for p in INIT]
    ours = [p.clone() for p in INIT]
    opt, ref = TORCH[name](theirs, **options), make_reference(name, ours, **options)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(theirs, sign).backward()
        opt.step()
        ref.step(loss_and_grads(ours, sign)[1])
    return theirs, ours, opt, ref


def grid(**axes) -> list[dict]:
    """Every combination of the given option values, one dict each."""
    return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]


def case_id(options: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in options.items())


FLAGS = grid(weight_decay=[0.0, 0.1], maximize=[False, True])
# Adam-family betas/eps pairs: the defaults, and a short β2 (so AMSGrad's max matters) with an ε large enough that
# putting it inside the root, as seed 000 does, would move the path by far more than TOL.
MOMENTS = [{"betas": (0.9, 0.999), "eps": 1e-8}, {"betas": (0.5, 0.9), "eps": 1e-3}]

CASES = [
    *(
        ("sgd", {"lr": 0.05, **o})
        for o in grid(
            momentum=[0.0, 0.9], dampening=[0.0, 0.5], nesterov=[False, True], weight_decay=[0.0, 0.1], maximize=[False, True]
        )
        if not o["nesterov"] or (o["momentum"] and not o["dampening"])
    ),
    *(
        ("adagrad", {"lr": 0.1, **o, **f})
        for o in grid(lr_decay=[0.0, 0.1], initial_accumulator_value=[0.0, 0.5], eps=[1e-10, 1e-2])
        for f in FLAGS
    ),
    *(("adadelta", {**o, **f}) for o in grid(lr=[1.0, 0.5], rho=[0.9, 0.5], eps=[1e-6, 1e-3]) for f in FLAGS),
    *(
        ("rmsprop", {"lr": 0.01, **o, **f})
        for o in grid(centered=[False, True], momentum=[0.0, 0.9], alpha=[0.99, 0.9], eps=[1e-8, 1e-3])
        for f in FLAGS
    ),
    *(
        ("adam", {"lr": 0.01, **m, **o, **f})
        for m in MOMENTS
        for o in grid(amsgrad=[False, True], decoupled_weight_decay=[False, True])
        for f in FLAGS
        if f["weight_decay"] or not o["decoupled_weight_decay"]
    ),
    *(
        ("adamw", {"lr": 0.01, **m, **o})
        for m in MOMENTS
        for o in grid(amsgrad=[False, True], weight_decay=[0.0, 1e-2, 0.1], maximize=[False, True])
    ),
    *(
        ("nadam", {"lr": 0.01, **m, **o, **f})
        for m in MOMENTS
        for o in grid(momentum_decay=[4e-3, 0.1], decoupled_weight_decay=[False, True])
        for f in FLAGS
        if f["weight_decay"] or not o["decoupled_weight_decay"]
    ),
]


@pytest.mark.parametrize(("name", "options"), CASES, ids=[f"{n}[{case_id(o)}]" for n, o in CASES])
def test_matches_torch(name, options):
    theirs, ours, _, _ = run_both(name, options)
    assert_same_path(theirs, ours)


@pytest.mark.parametrize(
    "options",
    [
        {"lr": 0.05, "t0": t0, **la, **f}
        for t0 in [0.0, 5.0, 7.5, 1e6]
        for la in [{"lambd": 1e-4, "alpha": 0.75}, {"lambd": 0.5, "alpha": 0.75}, {"lambd": 0.5, "alpha": 1.0}]
        for f in FLAGS
    ],
    ids=case_id,
)
def test_asgd_matches_torch_with_its_average(options):
    """torch's η_t = γ/(1+λγ(t-1))^α, not seed 000's 1/(γ(1+λγt)^α), and averaging from step t > t0 + 2, not t0 + 1."""
    theirs, ours, opt, ref = run_both("asgd", options)
    assert_same_path(theirs, ours)
    their_ax = [opt.state[p]["ax"] for p in theirs]
    assert max_diff(their_ax, [s["ax"] for s in ref.state]) <= TOL
    if options["t0"] < STEPS - 2:
        assert max_diff(their_ax, theirs) > 1e-6, "averaging never started: the case would not test ax"


def test_amsgrad_cases_use_the_running_max():
    """The short-β2 Adam cases are the ones where AMSGrad's max(v_max, v_t) differs from v_t, so they test it."""
    theirs, _, opt, _ = run_both("adam", {"lr": 0.01, "amsgrad": True, **MOMENTS[1]})
    assert any((opt.state[p]["max_exp_avg_sq"] > opt.state[p]["exp_avg_sq"]).any() for p in theirs)


# Fixed steps, and strong-Wolfe searches whose first trial (lr) overshoots, so they bracket and zoom.
# tolerance_grad = 5e-2 ends steps at the optimality test (and the next step at once); tolerance_change = 1e-2
# ends them at the g·d and loss-change tests.
LBFGS_GRID = [
    {**search, **o, **budget, **tolerance}
    for search in [{"lr": 0.5}, *({"lr": lr, "line_search_fn": "strong_wolfe"} for lr in (5.0, 500.0))]
    for o in grid(history_size=[2, 100], maximize=[False, True])
    for budget in [{"max_iter": 5}, {"max_iter": 10, "max_eval": 7}]
    for tolerance in [{}, {"tolerance_grad": 5e-2}, {"tolerance_change": 1e-2}]
]


@pytest.mark.parametrize("options", LBFGS_GRID, ids=case_id)
def test_lbfgs_matches_torch(options):
    """Four outer steps: same losses, parameters, iteration and evaluation counts, and history length as torch's.

    Not bit for bit: torch evaluates float / tensor as float * (1 / tensor), so its cubic interpolation can round
    differently from the reference's plain division; here that stays below 1e-13, but on an ill-conditioned problem
    (Rosenbrock, lr=20, max_iter=20) those ulps grow past TOL along the path."""
    sign = -1.0 if options["maximize"] else 1.0
    theirs = [p.clone().requires_grad_() for p in INIT]
    ours = [p.clone() for p in INIT]
    opt, ref = torch.optim.LBFGS(theirs, **options), make_reference("lbfgs", ours, **options)

    def closure():
        opt.zero_grad()
        loss = wiggly_loss(theirs, sign)
        loss.backward()
        return loss

    for _ in range(4):
        their_loss = opt.step(closure).item()
        assert abs(ref.step(lambda params: loss_and_grads(params, sign, wiggly_loss)) - their_loss) <= TOL
    state = opt.state[theirs[0]]
    assert (ref.state["n_iter"], ref.state["func_evals"], len(ref.state["old_dirs"])) == (
        state["n_iter"],
        state["func_evals"],
        len(state["old_dirs"]),
    )
    assert_same_path(theirs, ours)


SEED_FORMULAS = {  # θ_1 by the seed's formula as written, from θ_0 with gradient g (m̂_1 = g, v̂_1 = g², G_1 = g²)
    "seed000-adam-eps-in-root": (
        "adam",
        {"lr": 0.01, "eps": 1e-3},
        lambda th, g, o: th - o["lr"] * g / (g * g + o["eps"]).sqrt(),
    ),
    "seed000-rmsprop-eps-in-root": (
        "rmsprop",
        {"lr": 0.01, "eps": 1e-3},  # v_1 = (1-α)g² with the default α = 0.99
        lambda th, g, o: th - o["lr"] * g / ((1 - 0.99) * g * g + o["eps"]).sqrt(),
    ),
    "seed003-adagrad-eps-in-root": (
        "adagrad",
        {"lr": 0.1, "eps": 1e-3},
        lambda th, g, o: th - o["lr"] * g / (g * g + o["eps"]).sqrt(),
    ),
    "seed000-asgd-eta-typo": (
        "asgd",
        {"lr": 0.05, "lambd": 0.5},  # η_1 = 1/(γ(1+λγ·1)^α), default α = 0.75
        lambda th, g, o: th - g / (o["lr"] * (1 + o["lambd"] * o["lr"]) ** 0.75),
    ),
    "seed004-adamw-decay-after-step": (
        "adamw",
        {"lr": 0.01, "weight_decay": 0.1},  # (θ - Adam step)(1 - γλ)
        lambda th, g, o: (th - o["lr"] * g / (g.abs() + 1e-8)) * (1 - o["lr"] * o["weight_decay"]),
    ),
}


@pytest.mark.parametrize("case", SEED_FORMULAS)
def test_seed_formula_is_not_torchs(case):
    """Where a seed's formula differs from torch's, its first step misses torch's by far more than TOL; the
    reference, which follows torch, matches."""
    name, options, seed_step = SEED_FORMULAS[case]
    theta, g = INIT[0], loss_and_grads(INIT, 1.0)[1][0]
    param = theta.clone().requires_grad_()
    param.grad = g.clone()
    TORCH[name]([param], **options).step()
    ours = theta.clone()
    make_reference(name, [ours], **options).step([g])
    assert (ours - param.detach()).abs().max() <= TOL
    assert (seed_step(theta, g, options) - param.detach()).abs().max() > 1e3 * TOL


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_options_and_defaults_are_torchs(name):
    """Same option names and defaults as torch.optim's, less its implementation switches."""
    ours = inspect.signature(REFERENCE[name]).parameters
    theirs = inspect.signature(TORCH[name]).parameters
    assert {k: p.default for k, p in ours.items()} == {k: theirs[k].default for k in ours}
    assert set(theirs) - set(ours) <= {"foreach", "capturable", "differentiable", "fused"}


def test_make_reference_names():
    assert isinstance(make_reference("AdamW", [INIT[0].clone()]), REFERENCE["adamw"])
    with pytest.raises(ConfigError, match="optimizer='adamax'"):
        make_reference("adamax", [INIT[0].clone()])


def test_nesterov_needs_momentum_without_dampening_like_torch():
    for options in ({"nesterov": True}, {"nesterov": True, "momentum": 0.9, "dampening": 0.5}):
        with pytest.raises(ValueError):
            torch.optim.SGD([INIT[0].clone().requires_grad_()], **options)
        with pytest.raises(ValueError):
            make_reference("sgd", [INIT[0].clone()], **options)
