"""Weighting interface, loss-based strategies (hand-worked numbers), bad input, state round-trip."""

import io
import math

import pytest
import torch
from torch import nn

from densemtl.weighting import WEIGHTING_REGISTRY, build_weighting, check_finite

TASKS = ("depth", "normals", "semseg")


def losses_of(*values: float, tasks=TASKS, requires_grad: bool = True) -> dict:
    return {t: torch.tensor(float(v), dtype=torch.float64, requires_grad=requires_grad)
            for t, v in zip(tasks, values, strict=True)}


def run_epoch(strategy, rows) -> list[dict]:
    """Feed one epoch of steps (rows of raw losses); return the weights used at each step."""
    used = [strategy.backward(losses_of(*row, tasks=strategy.tasks)).weights for row in rows]
    strategy.on_epoch_end()
    return used


# -- registry and bad input ------------------------------------------------------------------------


def test_registry_has_every_spec_and_libmtl_strategy():
    assert set(WEIGHTING_REGISTRY) == {
        "fixed", "equal", "uncertainty", "dwa", "gls", "rlw", "lsb", "gradnorm", "mgda",
        "pcgrad", "cagrad", "imtl", "nash_mtl", "aligned_mtl", "upgrad", "fairgrad", "gradvac",
        "graddrop", "moco", "db_mtl", "stch", "excess_mtl", "famo", "modo", "sdmgrad", "dualproj"}


def test_the_weighting_sweep_covers_every_strategy():
    from pathlib import Path

    import yaml

    sweep = Path(__file__).resolve().parents[3] / "conf" / "sweep" / "weighting_x_seeds.yaml"
    names = yaml.safe_load(sweep.read_text())["hydra"]["sweeper"]["params"]["weighting"]
    assert set(names.split(",")) == set(WEIGHTING_REGISTRY) | {"imtl_l", "imtl_both"}


def test_the_one_hour_weighting_preset_is_a_subset_of_the_full_sweep_on_the_same_runs():
    """sweep=weighting_core gives rows of the full table: ten of its schemes, every other
    setting of a job identical."""
    from pathlib import Path

    import yaml

    from densemtl.config import compose

    conf = Path(__file__).resolve().parents[3] / "conf" / "sweep"
    params = {name: yaml.safe_load((conf / f"{name}.yaml").read_text())["hydra"]["sweeper"]
              ["params"] for name in ("weighting_core", "weighting_x_seeds")}
    core = params["weighting_core"]["weighting"].split(",")
    assert len(core) == len(set(core)) == 10
    assert set(core) < set(params["weighting_x_seeds"]["weighting"].split(","))
    full, short = compose(["sweep=weighting_x_seeds"]), compose(["sweep=weighting_core"])
    assert short.tracking.sweep == "weighting_core"
    short.tracking.sweep = full.tracking.sweep
    assert short == full


def test_every_strategy_has_a_config_with_its_defaults():
    """conf/weighting/<name>.yaml exists for every strategy and its values are the defaults."""
    import inspect
    from pathlib import Path

    import yaml

    conf = Path(__file__).resolve().parents[3] / "conf" / "weighting"
    for name in WEIGHTING_REGISTRY.names():
        cls = WEIGHTING_REGISTRY.get(name)
        cfg = yaml.safe_load((conf / f"{name}.yaml").read_text())
        assert cfg.pop("name") == name
        params = inspect.signature(cls.__init__).parameters
        for key, value in cfg.items():
            default = params[key].default
            if name == "fixed" or default is None or key == "space":
                continue
            assert value == default, (name, key)


def test_unknown_name_lists_valid_ones():
    with pytest.raises(KeyError, match=r"unknown weighting 'uncertanty'.*dwa.*uncertainty"):
        build_weighting("uncertanty", TASKS)


def test_unknown_option_names_it_and_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['temprature'\].*temperature"):
        build_weighting("dwa", TASKS, temprature=2.0)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([1.0, 2.0], r"weights has 2 values but there are 3 tasks"),
        ([1.0, -2.0, 1.0], r"weights\['normals'\] must be >= 0, got -2.0"),
        ([1.0, float("nan"), 1.0], r"weights\['normals'\] must be finite, got nan"),
        ([1.0, float("inf"), 1.0], r"weights\['normals'\] must be finite"),
        ({"depth": 1.0, "normals": 1.0}, r"exactly the task keys.*missing \['semseg'\]"),
        ({"depth": 1.0, "normals": 1.0, "semseg": 1.0, "edge": 1.0},
         r"unexpected \['edge'\]"),
        ([0.0, 0.0, 0.0], r"at least one positive"),
        ("1,2,3", r"weighting\.weights='1,2,3': expected Sequence\[float\] \| Mapping"),
        ([1.0, "2", 1.0], r"weighting\.weights=\[1\.0, '2', 1\.0\]: expected"),
    ],
)
def test_fixed_weights_are_validated_at_construction(weights, message):
    with pytest.raises(ValueError, match=message):
        build_weighting("fixed", TASKS, weights=weights)


def test_lsb_priorities_are_validated():
    with pytest.raises(ValueError, match=r"priorities\['depth'\] must be >= 0"):
        build_weighting("lsb", TASKS, priorities=[-1.0, 1.0, 1.0])


@pytest.mark.parametrize(("name", "key", "value"), [
    ("uncertainty", "init", float("nan")), ("lsb", "beta_step", float("inf")),
    ("gradnorm", "alpha", "1.5")])
def test_numeric_options_must_be_finite_numbers(name, key, value):
    # a string fails the registry's type check, a non-finite float the strategy's own check
    match = rf"{name} {key} must be a finite number|weighting\.{key}='1\.5': expected float"
    with pytest.raises(ValueError, match=match):
        build_weighting(name, TASKS, **{key: value})


def test_duplicate_or_empty_tasks_rejected():
    with pytest.raises(ValueError, match="distinct names"):
        build_weighting("equal", ["a", "a"])
    with pytest.raises(ValueError, match="distinct names"):
        build_weighting("equal", [])


def test_losses_must_match_tasks():
    strategy = build_weighting("gls", TASKS)
    with pytest.raises(KeyError, match=r"unknown task\(s\) \['edge'\]"):
        strategy.backward({"edge": torch.tensor(1.0)})
    with pytest.raises(KeyError, match="needs a loss for every task"):
        strategy.backward(losses_of(1.0, 2.0, tasks=TASKS[:2]))
    with pytest.raises(ValueError, match=r"loss of task 'depth' must be a scalar"):
        strategy.backward({"depth": torch.ones(2), "normals": torch.tensor(1.0),
                           "semseg": torch.tensor(1.0)})


def test_check_finite_names_the_bad_tasks():
    losses = {"depth": torch.tensor(1.0), "normals": torch.tensor(float("nan")),
              "semseg": torch.tensor(float("-inf"))}
    assert check_finite(losses) == ["normals", "semseg"]
    assert check_finite(losses_of(1.0, 2.0, 3.0)) == []


# -- fixed / equal ---------------------------------------------------------------------------------


def test_fixed_weights_dict_and_subset_for_single_tasking():
    strategy = build_weighting("fixed", TASKS, weights={"semseg": 1.0, "depth": 2.0, "normals": 10})
    losses = losses_of(0.5, 0.25, 3.0, requires_grad=True)
    out = strategy.backward(losses)
    assert out.total.item() == pytest.approx(2 * 0.5 + 10 * 0.25 + 3.0)
    assert [losses[t].grad.item() for t in TASKS] == [2.0, 10.0, 1.0]
    assert out.loss_scales == {"depth": 1.0, "normals": 2.5, "semseg": 3.0}
    one = strategy.backward({"normals": torch.tensor(0.5, requires_grad=True)})  # one task per pass
    assert one.weights == {"normals": 10.0} and one.total.item() == 5.0


def test_equal_is_the_plain_sum():
    out = build_weighting("equal", TASKS).backward(losses_of(1.0, 2.0, 4.0))
    assert out.total.item() == 7.0 and out.weights == dict.fromkeys(TASKS, 1.0)


# -- uncertainty -----------------------------------------------------------------------------------


def test_uncertainty_objective_at_init():
    strategy = build_weighting("uncertainty", TASKS)
    out = strategy.backward(losses_of(1.0, 2.0, 4.0))
    w = 0.5 * math.exp(0.5)  # s = -0.5
    assert out.total.item() == pytest.approx(w * 7.0 - 3 * 0.25)
    # d/ds [L e^{-s}/2 + s/2] = -L e^{-s}/2 + 1/2
    expected = [-v * w + 0.5 for v in (1.0, 2.0, 4.0)]
    assert strategy.log_vars.grad.tolist() == pytest.approx(expected)


def test_uncertainty_optimum_puts_every_weighted_loss_at_one_half():
    strategy = build_weighting("uncertainty", TASKS).double()
    opt = torch.optim.SGD(strategy.extra_parameters(), lr=1.0)
    for _ in range(120):
        opt.zero_grad()
        out = strategy.backward(losses_of(4.0, 0.1, 25.0))
        opt.step()
    assert list(out.loss_scales.values()) == pytest.approx([0.5] * 3, abs=1e-12)
    assert strategy.log_vars.tolist() == pytest.approx([math.log(4.0), math.log(0.1),
                                                        math.log(25.0)], abs=1e-8)


# -- DWA -------------------------------------------------------------------------------------------


def test_dwa_is_one_for_two_epochs_then_k_softmax_of_ratios_over_two():
    strategy = build_weighting("dwa", TASKS)
    e1 = run_epoch(strategy, [(1.0, 2.0, 5.0), (3.0, 4.0, 3.0)])  # means 2, 3, 4
    e2 = run_epoch(strategy, [(1.0, 3.0, 8.0)])  # ratios 1/2, 1, 2
    assert all(w == dict.fromkeys(TASKS, 1.0) for w in e1 + e2)
    e3 = run_epoch(strategy, [(1.0, 1.0, 1.0), (3.0, 3.0, 3.0)])  # means 2, 2, 2
    z = math.exp(0.25) + math.exp(0.5) + math.exp(1.0)
    expected = [3 * math.exp(0.25) / z, 3 * math.exp(0.5) / z, 3 * math.exp(1.0) / z]
    assert list(e3[0].values()) == pytest.approx(expected)
    e4 = run_epoch(strategy, [(2.0, 2.0, 2.0)])  # ratios (2,2,2)/(1,3,8)
    z = math.exp(1.0) + math.exp(1 / 3) + math.exp(1 / 8)
    expected = [3 * math.exp(1.0) / z, 3 * math.exp(1 / 3) / z, 3 * math.exp(1 / 8) / z]
    assert list(e4[0].values()) == pytest.approx(expected)


def test_dwa_needs_a_loss_for_every_task_each_epoch():
    strategy = build_weighting("dwa", TASKS)
    run_epoch(strategy, [(1.0, 1.0, 1.0)])
    strategy.backward({"depth": torch.tensor(1.0, requires_grad=True)})
    with pytest.raises(ValueError, match=r"dwa: the epoch-mean loss of task\(s\) \['normals', "):
        strategy.on_epoch_end()


# -- GLS -------------------------------------------------------------------------------------------


def test_gls_is_the_geometric_mean_with_its_gradient():
    strategy = build_weighting("gls", TASKS[:2])
    losses = losses_of(2.0, 8.0, tasks=TASKS[:2], requires_grad=True)
    out = strategy.backward(losses)
    assert out.total.item() == pytest.approx(4.0)  # sqrt(2 * 8)
    # d sqrt(L1 L2)/dL1 = sqrt(L2/L1)/2 = 1, d/dL2 = sqrt(L1/L2)/2 = 1/4
    assert [losses[t].grad.item() for t in TASKS[:2]] == pytest.approx([1.0, 0.25])
    assert list(out.weights.values()) == pytest.approx([1.0, 0.25])
    assert list(out.loss_scales.values()) == pytest.approx([2.0, 2.0])  # G / K each
    three = build_weighting("gls", TASKS).backward(losses_of(1.0, 2.0, 4.0))
    assert three.total.item() == pytest.approx(2.0)


# -- RLW -------------------------------------------------------------------------------------------


def test_rlw_weights_are_a_softmax_of_seeded_normal_draws():
    strategy = build_weighting("rlw", TASKS, seed=7)
    gen = torch.Generator().manual_seed(7)
    for _ in range(3):
        expected = torch.softmax(torch.randn(3, generator=gen, dtype=torch.float64), 0)
        out = strategy.backward(losses_of(1.0, 1.0, 1.0))
        assert list(out.weights.values()) == pytest.approx(expected.tolist())
        assert sum(out.weights.values()) == pytest.approx(1.0)


# -- LSB -------------------------------------------------------------------------------------------


def test_lsb_hand_worked_periods():
    strategy = build_weighting("lsb", TASKS[:2], beta_step=0.5)
    # period 1: w = pi = (1/2, 1/2); means (2, 8)
    assert run_epoch(strategy, [(1.0, 8.0), (3.0, 8.0)])[0] == {"depth": 0.5, "normals": 0.5}
    # period 2: d = 1, q = (1/2, 1/2), Z = 0.5*2 + 0.5*8 = 5, w = q Z / L = (1.25, 0.3125)
    assert strategy.z_value == 5.0 and strategy.beta == 0.5
    w2 = run_epoch(strategy, [(1.0, 8.0)])[0]
    assert list(w2.values()) == pytest.approx([1.25, 0.3125])
    # period 3: beta = 1, d = (1/2, 8/8), q ∝ (1/4, 1/2) = (1/3, 2/3),
    # Z = 1.25*1 + 0.3125*8 = 3.75, w = (1/3*3.75/1, 2/3*3.75/8) = (1.25, 0.3125)
    assert strategy.beta == 1.0 and strategy.z_value == pytest.approx(3.75)
    assert strategy.q == pytest.approx([1 / 3, 2 / 3])
    w3 = strategy.backward(losses_of(1.0, 8.0, tasks=TASKS[:2]))
    assert list(w3.weights.values()) == pytest.approx([1.25, 0.3125])
    assert list(w3.loss_scales.values()) == pytest.approx([1.25, 2.5])  # q * Z


def test_lsb_z_one_and_priorities():
    strategy = build_weighting("lsb", TASKS[:2], priorities=[3.0, 1.0], beta_step=0.0, z="one")
    assert run_epoch(strategy, [(2.0, 4.0)])[0] == {"depth": 3.0, "normals": 1.0}
    # q = pi / sum(pi) = (3/4, 1/4); w = q / L = (3/8, 1/16)
    assert strategy.weights == pytest.approx([3 / 8, 1 / 16])


#: Z(2) with 'normals' ×7 over Z(2) without: Σ π L̄(1), L̄(1) = (3, 1, 20) from PERIODS[0].
Z2_RATIO = (3.0 + 7.0 * 1.0 + 20.0) / (3.0 + 1.0 + 20.0)
PERIODS = [[(2.0, 0.5, 30.0), (4.0, 1.5, 10.0)], [(1.0, 0.8, 12.0)], [(1.5, 0.1, 9.0)],
           [(0.5, 0.2, 3.0), (0.7, 0.4, 5.0)]]


def lsb_trace(beta_step: float, scale: float = 1.0, z: str = "previous_total") -> list[dict]:
    """q, weights, Z and last period means after each period, task 'normals' multiplied."""
    strategy = build_weighting("lsb", TASKS, beta_step=beta_step, z=z)
    trace = []
    for rows in PERIODS:
        run_epoch(strategy, [(a, b * scale, c) for a, b, c in rows])
        trace.append({"q": list(strategy.q), "w": list(strategy.weights), "z": strategy.z_value,
                      "means": list(strategy.history[-1])})
    return trace


@pytest.mark.parametrize("beta_step", [0.0, 0.5, 2.0])
def test_lsb_priorities_sum_to_one(beta_step):
    for step in lsb_trace(beta_step):
        assert sum(step["q"]) == pytest.approx(1.0, abs=1e-15)


def test_lsb_beta_zero_equalises_loss_scales():
    for step in lsb_trace(0.0):
        scales = [w * m for w, m in zip(step["w"], step["means"], strict=True)]
        assert scales == pytest.approx([step["z"] / 3] * 3, rel=1e-12)


@pytest.mark.parametrize("z", ["previous_total", "one"])
def test_lsb_is_invariant_to_scaling_one_loss(z):
    base, scaled = lsb_trace(0.7, z=z), lsb_trace(0.7, scale=7.0, z=z)
    for a, b in zip(base, scaled, strict=True):
        assert b["q"] == pytest.approx(a["q"], rel=1e-12)
        shares = [[w * m / s["z"] for w, m in zip(s["w"], s["means"], strict=True)]
                  for s in (a, b)]
        assert shares[1] == pytest.approx(shares[0], rel=1e-12)
        # Z(2) = Σ π L̄(1) sees the scale, and every later Z is proportional to it; with z="one"
        # nothing but the scaled task's weight changes.
        ratio = b["z"] / a["z"]
        assert ratio == pytest.approx(1.0 if z == "one" else Z2_RATIO, rel=1e-12)
        expected = [a["w"][0] * ratio, a["w"][1] * ratio / 7.0, a["w"][2] * ratio]
        assert b["w"] == pytest.approx(expected, rel=1e-12)


# -- state round-trip ------------------------------------------------------------------------------


class TwoLayer(nn.Module):
    """Shared linear layer + one linear head per task, float64, fixed weights."""

    def __init__(self, num_tasks: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.shared = nn.Linear(3, 4).double()
        self.heads = nn.ModuleList(nn.Linear(4, 1).double() for _ in range(num_tasks))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))

    def losses(self, step: int, tasks) -> tuple[dict, torch.Tensor]:
        x = torch.linspace(-1, 1, 6, dtype=torch.float64).reshape(2, 3) + 0.1 * step
        z = torch.tanh(self.shared(x))
        return {t: (h(z) - i).pow(2).mean() + 0.1 for i, (t, h) in
                enumerate(zip(tasks, self.heads, strict=True))}, z


ROUND_TRIP = {
    "fixed": {"weights": [1.0, 2.0, 3.0]}, "equal": {}, "uncertainty": {}, "dwa": {}, "gls": {},
    "rlw": {"seed": 3}, "lsb": {"beta_step": 0.3}, "gradnorm": {}, "mgda": {},
    "pcgrad": {"seed": 5}, "cagrad": {}, "imtl": {"mode": "both"}, "nash_mtl": {},
    "aligned_mtl": {}, "upgrad": {}, "dualproj": {"preference": [1.0, 2.0, 3.0]},
    "fairgrad": {"alpha": 2.0}, "gradvac": {"beta": 0.5},
    "graddrop": {"seed": 2}, "moco": {}, "db_mtl": {"beta_sigma": 0.5}, "stch": {
        "warmup_epochs": 1}, "excess_mtl": {"robust_step_size": 0.5}, "famo": {"w_lr": 0.5},
    "modo": {"gamma": 0.5}, "sdmgrad": {},
}


def scenario(name: str, steps: range, state: dict | None = None) -> tuple[list, dict]:
    """Run ``steps`` (3 per epoch) of a strategy on a small net; optionally start from ``state``."""
    strategy = build_weighting(name, TASKS, **ROUND_TRIP[name])
    net = TwoLayer(len(TASKS))
    params = list(net.parameters()) + strategy.extra_parameters()
    opt = torch.optim.SGD(params, lr=0.05)
    if state is not None:
        strategy.load_state_dict(state["strategy"])
        net.load_state_dict(state["net"])
    used = []
    needs = strategy.needs
    for step in steps:
        opt.zero_grad()
        losses, z = net.losses(step, TASKS)
        extra = [net.losses(step + 0.3 * (k + 1), TASKS)[0] for k in range(needs.samples - 1)]
        out = strategy.backward(losses, shared_parameters=list(net.shared.parameters()),
                                representation=z, extra_losses=extra)
        opt.step()
        if needs.post_step_losses:
            with torch.no_grad():
                strategy.after_step(net.losses(step, TASKS)[0])
        used.append(out.weight_tensor.tolist())
        if step % 3 == 2:
            strategy.on_epoch_end()
    buffer = io.BytesIO()
    torch.save({"strategy": strategy.state_dict(), "net": net.state_dict()}, buffer)
    buffer.seek(0)
    return used, torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("name", sorted(ROUND_TRIP))
def test_state_round_trip_resumes_exactly(name):
    assert set(ROUND_TRIP) == set(WEIGHTING_REGISTRY)
    straight, end = scenario(name, range(11))
    first, state = scenario(name, range(7))  # stops mid-epoch: the accumulators must travel
    second, resumed_end = scenario(name, range(7, 11), state)
    assert first + second == straight
    assert_same(resumed_end, end)  # histories, β, learned parameters, RNG state


def assert_same(a, b) -> None:
    """Exact equality of nested state (tensors, dicts, lists, numbers)."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    else:
        assert a == b
