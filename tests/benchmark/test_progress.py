"""benchmark.progress: tqdm frames only on a TTY; sparse plain lines (10 % or 60 s) in a log."""

from __future__ import annotations

import io

import numpy as np

from benchmark.api import Method
from benchmark.progress import LineProgress, NullProgress, progress_bar
from benchmark.runner import predict_in_chunks


class FakeClock:
    def __init__(self, step: float) -> None:
        self.t, self.step = 0.0, step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


class TTYStream(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_non_tty_stream_gets_one_line_per_ten_percent_and_no_carriage_returns():
    out = io.StringIO()
    bar = LineProgress(200, desc="train", unit="it", stream=out, clock=FakeClock(0.01))
    for i in range(200):
        bar.set_postfix_str(f"loss={1 / (i + 1):.3f}")
        bar.update(1)
    bar.close()
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert [line.split(" it ")[0] for line in lines] == [f"train: {n}/200" for n in range(20, 201, 20)]
    assert "(100 %)" in lines[-1] and "loss=0.005" in lines[-1]


def test_non_tty_slow_steps_get_a_line_every_minute():
    out = io.StringIO()
    bar = LineProgress(1000, desc="train", stream=out, clock=FakeClock(61.0))
    for _ in range(5):
        bar.update(1)
    assert len(out.getvalue().splitlines()) == 5
    assert "ETA" in out.getvalue().splitlines()[-1]


def test_resumed_bar_counts_from_initial_and_close_adds_a_last_line_once():
    out = io.StringIO()
    bar = LineProgress(100, desc="s", initial=50, stream=out, clock=FakeClock(0.01))
    bar.update(5)
    assert out.getvalue() == ""
    bar.update(5)
    assert out.getvalue().splitlines()[-1].startswith("s: 60/100")
    bar.update(3)
    bar.close()
    bar.close()
    assert [line.split(" it ")[0] for line in out.getvalue().splitlines()] == ["s: 60/100", "s: 63/100"]


def test_progress_bar_picks_tqdm_only_on_a_tty():
    log, tty = io.StringIO(), TTYStream()
    assert isinstance(progress_bar(10, desc="x", stream=log), LineProgress)
    bar = progress_bar(10, desc="x", stream=tty, leave=True)
    for _ in range(10):
        bar.update(1)
    bar.close()
    assert "\r" in tty.getvalue()
    assert isinstance(progress_bar(10, enabled=False, stream=tty), NullProgress)


class BlankMethod(Method):
    name = "blank"
    description = "predicts background"

    def fit(self, data, **kw):
        pass

    def predict(self, images):
        return [np.zeros(im.shape[:2], np.int32) for im in images]


def test_runner_prediction_progress_in_a_log_is_plain_lines(capsys):
    images = [np.zeros((8, 8, 3), np.uint8)] * 40
    predict_in_chunks(BlankMethod(), images, chunk=4, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err
    assert err.splitlines()[-1].startswith("predict: 40/40 patch (100 %)")
