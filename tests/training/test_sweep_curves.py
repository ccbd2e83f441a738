"""Issue #11: the sweep's training curves, both inference and batch-rule FVU, and FVU >= 1 warnings."""
import numpy as np
import pandas as pd
import pytest
import torch

from sae_app import sweep_charts
from sae_core.io import read_json
from sae_core.sae import create_sae
from sae_core.sae.config import SAEConfig
from sae_core.training.job import evaluate_sae
from sae_core.training.sweep import fvu_warnings, load_sweep_table, load_training_curves
from sae_core.workspace import Workspace
from tests.helpers import sae_state, small_sweep


def test_training_curves_hold_every_sae_step_log(tmp_path):
    ws = Workspace(tmp_path / "ws")
    table = load_sweep_table(small_sweep(ws))
    curves = load_training_curves(ws, table)
    assert sorted(curves["label"].unique()) == ["batchtopk", "sampled l=1 l2", "sampled l=4 l2", "topk"]
    for row in table.itertuples():
        hist = read_json(ws.get("sae", row.sae).path / "history.json")
        mine = curves[curves["sae"] == row.sae]
        assert list(mine["tokens"]) == [h["tokens"] for h in hist]
        assert np.allclose(mine["sq_err"], [h["sq_err"] for h in hist])
        churn = mine["pool_churn"]
        if row.arch == "sampled":  # a pool: churn logged from the second step on, a fraction
            assert churn.iloc[1:].between(0, 1).all()
        else:
            assert churn.isna().all()
    fig = sweep_charts.training_curves(curves, "sq_err")
    assert [t.name for t in fig.data] == list(curves["label"].unique())
    first = curves[curves["label"] == fig.data[0].name]
    assert np.allclose(fig.data[0].y, first["sq_err"])


def test_batch_rule_fvu_matches_a_numpy_reference():
    cfg = SAEConfig(arch="batchtopk", d_in=16, d_sae=48, k=3)
    sae = create_sae(cfg)
    sae.load_state_dict(sae_state(cfg, seed=4))
    sae.threshold.fill_(0.2)
    x = torch.randn(300, 16, generator=torch.Generator().manual_seed(5))
    batches = [x[:128], x[128:256], x[256:]]
    m = evaluate_sae(sae, batches, batch_size=128)
    W_enc, b_enc, W_dec, b_dec = (sae.W_enc.detach().numpy(), sae.b_enc.detach().numpy(),
                                  sae.W_dec.detach().numpy(), sae.b_dec.detach().numpy())
    sse, l0 = 0.0, 0
    for b in batches:
        xb = b.numpy()
        a = np.maximum((xb - b_dec) @ W_enc + b_enc, 0)
        keep = 3 * len(xb)
        cut = np.sort(a.ravel())[-keep]  # the batch's top k*B activations (no ties in random data)
        z = np.where(a >= cut, a, 0)
        sse += ((xb - (z @ W_dec + b_dec)) ** 2).sum()
        l0 += (z > 0).sum()
    xn = x.numpy()
    assert m["fvu_batch_rule"] == pytest.approx(sse / ((xn - xn.mean(0)) ** 2).sum(), rel=1e-5)
    assert m["l0_batch_rule"] == pytest.approx(l0 / len(xn))
    assert m["fvu_batch_rule"] != m["fvu"]  # the inference threshold is another rule


def test_fvu_at_or_above_one_is_a_warning_never_a_silent_point():
    table = pd.DataFrame([
        {"arch": "sampled", "l": 4.0, "scoring": "entropy", "sae": "s4", "fvu": 1.264, "fvu_batch_rule": 0.899},
        {"arch": "sampled", "l": 8.0, "scoring": "entropy", "sae": "s8", "fvu": 0.062, "fvu_batch_rule": 0.094},
        {"arch": "topk", "l": None, "scoring": None, "sae": "t", "fvu": 0.2, "fvu_batch_rule": None},
    ])
    [only] = fvu_warnings(table)
    assert only.startswith("sampled l=4 entropy: FVU 1.264 with the inference rule") and "s4" in only
    table.loc[1, "fvu_batch_rule"] = 1.0
    assert len(fvu_warnings(table)) == 2
