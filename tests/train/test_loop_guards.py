"""Loop guards: a non-finite loss stops the run with one line (the flag is reduced over ranks first)."""
from __future__ import annotations

import math

import pytest

from rsd_deploy.errors import RSDError
from rsd_deploy.train.distributed import any_rank
from rsd_deploy.train.loops import Trainer


def test_non_finite_loss_stops_with_one_line(make_config):
    trainer = Trainer(make_config("teacher", unet={"preset": "tiny"}, teacher=None))
    trainer.method.step = lambda t, i: {"teacher/mse": math.nan, "grad_norm/model": 1.0}  # type: ignore[method-assign]
    with pytest.raises(RSDError, match="non-finite at iteration 0") as info:
        trainer.run()
    assert "\n" not in str(info.value) and "optim.lr" in str(info.value)
    assert trainer.iteration == 0 and not list((trainer.output_dir / "checkpoints").glob("*.pt"))


def test_any_rank_in_one_process_is_the_flag():
    assert any_rank(True) is True and any_rank(False) is False
