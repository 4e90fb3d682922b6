"""The training loop's progress in a log (not a TTY): a line per 10 % of the iterations, no tqdm frames."""

from __future__ import annotations

import pytest
import torch

from methods.core.model import build_model
from methods.core.train import train


@pytest.mark.slow
def test_training_log_gets_ten_percent_lines_without_carriage_returns(small_patches, tiny_profile, tmp_path, capsys):
    profile = tiny_profile.replace(iterations=10, checkpoint_every=10)
    torch.manual_seed(0)
    train(build_model(profile), small_patches, profile, seed=0, device="cpu", workdir=tmp_path, progress=True,
          stage="teacher")
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("teacher: ")]
    assert [line.split(" it ")[0] for line in lines] == [f"teacher: {n}/10" for n in range(1, 11)]
    assert all("loss=" in line for line in lines)
