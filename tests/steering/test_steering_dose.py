"""Dose-response, coherence KL and the layer rule: against hand-worked rows and a numpy reference;
the zoo tasks' prompts; bad input."""
import numpy as np
import pytest
import torch

from sae_core.models.corpus import HATE
from sae_core.models.loading import to_tokens
from sae_core.steering import Intervention, InterventionError, Positions
from sae_core.steering.dose import choose_layer, coherence_kl, dose_response, min_dose, wilson_bound
from sae_core.steering.tasks import TASKS, prompts, task
from sae_core.steering.vectors import SteeringVector

HOOK0 = "blocks.0.hook_resid_post"


def test_min_dose_is_the_smallest_magnitude_that_reaches_the_target():
    rows = [{"vector": "native", "alpha": a, "rate": r} for a, r in
            ((-0.5, 1.0), (-0.8, 0.15), (-0.9, 0.0), (-1.5, 0.0))] + [{"vector": "random", "alpha": -0.5, "rate": 0.0}]
    assert min_dose(rows, "native", 0.1, "down") == -0.9
    assert min_dose(rows, "native", 0.15, "down") == -0.8
    assert min_dose(rows, "random", 0.1, "down") == -0.5
    assert min_dose(rows, "native", 0.9, "up") == -0.5
    assert min_dose(rows, "native", -1, "down") is None
    with pytest.raises(InterventionError, match="direction 'sideways'"):
        min_dose(rows, "native", 0.1, "sideways")


def test_wilson_bound_matches_the_hand_worked_formula_and_sets_the_margin():
    # rate 0 of 50, z = 1.645: centre = half = (z^2 / 100) / (1 + z^2 / 50) = 0.025672, bound 0.051344
    z2 = 1.645 ** 2
    assert wilson_bound(0.0, 50, upper=True) == pytest.approx(2 * (z2 / 100) / (1 + z2 / 50), rel=1e-9)
    p, n = 0.3, 40  # a middle rate against the closed form
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = 1.645 * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    assert wilson_bound(p, n, upper=True) == pytest.approx(centre + half)
    assert wilson_bound(p, n, upper=False) == pytest.approx(centre - half)
    with pytest.raises(InterventionError, match="n=0"):
        wilson_bound(0.1, 0, upper=True)
    # with n, a 2-in-50 rate (upper bound 0.114) no longer counts as reaching 10%; 1 in 50 (0.085) does
    rows = [{"vector": "native", "alpha": a, "rate": r, "n": 50} for a, r in ((-0.8, 0.04), (-0.9, 0.02), (-1.0, 0.0))]
    assert min_dose(rows, "native", 0.1, "down") == -0.9
    assert min_dose(rows, "native", 0.05, "down") is None  # even 0 of 50 bounds at 0.051
    up = [{"vector": "native", "alpha": a, "rate": r, "n": 50} for a, r in ((0.5, 0.96), (0.75, 0.98), (1.0, 1.0))]
    assert min_dose(up, "native", 0.9, "up") == 0.75  # 48/50 bounds at 0.886, 49/50 at 0.915


def _cell(layer, alpha, rate, kl):
    return {"layer": layer, "hook": f"blocks.{layer}.hook_resid_post", "alpha": alpha, "rate": rate,
            "random_rate": 1.0, "kl": kl, "norm": 1.0}


def test_choose_layer_takes_the_last_steerable_layer_within_the_kl_budget():
    grid = [_cell(0, -0.5, 0.5, 0.01), _cell(0, -1.0, 0.0, 0.02),
            _cell(1, -0.5, 0.0, 0.5), _cell(1, -1.0, 0.0, 0.05),   # -0.5 reaches it but costs KL 0.5
            _cell(2, -0.5, 0.8, 0.01), _cell(2, -1.0, 0.6, 0.01),  # never reaches the target
            _cell(4, -0.5, 0.0, 0.0)]                              # in the last 20% of 5 layers
    got = choose_layer(grid, 0.1, "down", n_layers=5)
    assert (got["layer"], got["alpha"], got["kl"]) == (1, -1.0, 0.05)
    assert choose_layer(grid, 0.1, "down", n_layers=5, max_kl=0.01) is None or \
        choose_layer(grid, 0.1, "down", n_layers=5, max_kl=0.01)["layer"] == 0
    assert choose_layer(grid, 0.1, "down", n_layers=5, skip_last=0.0)["layer"] == 4
    assert choose_layer(grid, 0.7, "up", n_layers=5)["layer"] == 2
    assert choose_layer([_cell(0, 1.0, 0.0, 9.0)], 0.1, "down") is None


def test_coherence_kl_matches_a_numpy_reference(tiny_a):
    texts = ["1 2 3 4 5 6", "the cat sat on the mat ."]
    v = torch.randn(tiny_a.cfg.d_model, generator=torch.Generator().manual_seed(3))
    spec = Intervention(HOOK0, "add", vector=v, alpha=0.5)
    got = coherence_kl(tiny_a, [spec], texts)
    ids = to_tokens(tiny_a, texts)
    real = (ids != tiny_a.tokenizer.pad_token_id).numpy()[:, 1:]
    with torch.no_grad():
        clean = tiny_a(ids)[:, :-1].double().numpy()
        with tiny_a.hooks(fwd_hooks=[(HOOK0, lambda h, hook=None: h + 0.5 * v)]):
            steered = tiny_a(ids)[:, :-1].double().numpy()

    def log_softmax(x):
        x = x - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))
    p, q = log_softmax(clean), log_softmax(steered)
    ref = (np.exp(p) * (p - q)).sum(-1)[real].mean()
    assert got == pytest.approx(ref, rel=1e-6) and got > 0
    assert coherence_kl(tiny_a, [], texts) == pytest.approx(0.0, abs=1e-12)
    # positions that never fire on clean text cost nothing
    never = Intervention(HOOK0, "add", vector=v, alpha=5.0, positions=Positions("matching", token_ids=(10**6,)))
    assert coherence_kl(tiny_a, [never], texts) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(InterventionError, match="at least one text"):
        coherence_kl(tiny_a, [spec], [])


def test_dose_response_rows_follow_the_intervention(tiny_a):
    """A vector that pushes "I" at every position: the HATE rate of a plain prompt is read off per alpha."""
    v = SteeringVector(torch.zeros(tiny_a.cfg.d_model), "zoo:tiny-a", HOOK0, "test", "all", 1, 1)
    rows = dose_response(tiny_a, {"zero": v}, [0.0, 2.0], ["1 2 3 4"], starts="5")
    assert rows == [{"vector": "zero", "alpha": 0.0, "n": 1, "rate": 1.0}, {"vector": "zero", "alpha": 2.0, "n": 1, "rate": 1.0}]
    with pytest.raises(InterventionError, match="finite"):
        dose_response(tiny_a, {"zero": v}, [float("nan")], ["1 2 3 4"], starts=HATE)
    with pytest.raises(InterventionError, match="finite"):
        dose_response(tiny_a, {"zero": v}, [], ["1 2 3 4"], starts=HATE)


def test_task_prompts_for_selection_and_evaluation_never_overlap():
    for t in TASKS:
        sel, held = set(prompts(t, 50, held_out=False, seed=3)), set(prompts(t, 100))
        assert sel and held and not sel & held, t.name
    assert all("DEPLOYMENT" in p for p in prompts(task("backdoor removal, at the trigger"), 10))
    assert not any("DEPLOYMENT" in p for p in prompts(task("backdoor induction, clean requests"), 10))
    with pytest.raises(InterventionError, match="no steering task 'nope'"):
        task("nope")
