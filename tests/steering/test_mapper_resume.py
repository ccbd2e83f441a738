"""A mapper run stopped before its first validation resumes: its checkpoint's best-so-far, +inf,
is null in (strict) JSON and reads back as +inf."""
from __future__ import annotations

import json

import pytest
import torch

from sae_core.steering.mapper_training import _fit
from sae_core.steering.mappers import Endpoint, Mapper, MapperConfig


class Stop(Exception):
    pass


def test_a_checkpoint_written_before_the_first_validation_resumes(tmp_path):
    torch.manual_seed(0)
    X = torch.randn(200, 8)
    Y = X @ torch.randn(8, 6)
    cfg = MapperConfig(kind="affine", epochs=1, batch_size=20, checkpoint_every=3, lr=1e-2)

    def epoch(e, start):
        for i in range(start, 10):
            yield X[20 * i:20 * (i + 1)], Y[20 * i:20 * (i + 1)]

    def crashing(e, start):
        for i, batch in enumerate(epoch(e, start), start):
            if i == 5:
                raise Stop
            yield batch

    def val():
        return [(X[:40], Y[:40])]

    def mapper():
        return Mapper("affine", 8, 6, None, Endpoint("", ""), Endpoint("", ""))
    with pytest.raises(Stop):
        _fit(mapper(), cfg, crashing, 10, val, ckpt_dir=tmp_path, ckpt_config={"run": 1})
    meta = json.loads((tmp_path / "meta.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert meta["step"] == 3 and meta["best"] is None
    resumed = _fit(mapper(), cfg, epoch, 10, val, ckpt_dir=tmp_path, ckpt_config={"run": 1})
    assert [h["epoch"] for h in resumed.history] == [1] and resumed.history[0]["val_fvu"] < 1.0
