"""Mean-teacher utilities: EMA schedule and update, ramps, unlabeled stream, perturbations (hand values)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from methods.core.meanteacher import (
    EMATeacherHook,
    RampSchedule,
    UnlabeledStream,
    clone_teacher,
    color_jitter,
    dihedral,
    ema_decay,
    ema_update,
    flip_boxes,
    random_erase,
    sigmoid_rampdown,
    sigmoid_rampup,
)


def test_ema_decay_schedules_by_hand():
    # mean teacher: min(1 - 1/(t+1), cap)
    assert ema_decay(0) == 0.0
    assert ema_decay(1) == pytest.approx(0.5)
    assert ema_decay(9) == pytest.approx(0.9)
    assert ema_decay(98) == pytest.approx(0.98999, abs=1e-4)
    assert ema_decay(1000) == 0.99
    assert ema_decay(500, max_decay=0.999) == pytest.approx(1 - 1 / 501)
    # PG-FANet's EMA.py: min(cap, (t+1)/(t+10))
    assert ema_decay(0, schedule="warmup10") == pytest.approx(0.1)
    assert ema_decay(1, schedule="warmup10") == pytest.approx(2 / 11)
    assert ema_decay(10_000, schedule="warmup10") == 0.99
    with pytest.raises(ValueError, match="unknown EMA schedule"):
        ema_decay(0, schedule="cosine")
    with pytest.raises(ValueError):
        ema_decay(-1)


def test_ema_update_values_and_buffers():
    student = nn.Sequential(nn.Linear(2, 1), nn.BatchNorm1d(1))
    teacher = clone_teacher(student)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        teacher[0].weight.fill_(1.0)
        teacher[0].bias.fill_(-2.0)
        student[0].weight.fill_(3.0)
        student[0].bias.fill_(2.0)
        student[1].running_mean.fill_(7.0)
    ema_update(teacher, student, 0.75)
    # 0.75 * 1 + 0.25 * 3 = 1.5 ; 0.75 * -2 + 0.25 * 2 = -1
    assert torch.allclose(teacher[0].weight, torch.full((1, 2), 1.5))
    assert torch.allclose(teacher[0].bias, torch.tensor([-1.0]))
    assert teacher[1].running_mean.item() == 7.0  # buffers are copied
    assert student[0].weight[0, 0].item() == 3.0  # the student is untouched
    ema_update(teacher, student, 0.0)  # decay 0: exact copy
    assert torch.equal(teacher[0].weight, student[0].weight)


def test_ema_hook_sequence_and_state_roundtrip():
    student = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        student.weight.fill_(0.0)
    hook = EMATeacherHook(clone_teacher(student), max_decay=0.99)
    values = []
    for step, w in enumerate([4.0, 8.0, 12.0]):
        with torch.no_grad():
            student.weight.fill_(w)
        hook.after_step(student, step)
        values.append(hook.teacher.weight.item())
    # decays 0, 1/2, 2/3 -> the running mean of the student weights: 4, 6, 8
    assert values == pytest.approx([4.0, 6.0, 8.0])
    state = hook.state_dict()
    other = EMATeacherHook(clone_teacher(student), max_decay=0.99)
    other.load_state_dict(state)
    assert other.updates == 3 and other.teacher.weight.item() == pytest.approx(8.0)


def test_sigmoid_ramps_by_hand():
    assert sigmoid_rampup(0, 10) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(5, 10) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(10, 10) == 1.0
    assert sigmoid_rampup(25, 10) == 1.0
    assert sigmoid_rampup(-3, 10) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(3, 0) == 1.0
    assert sigmoid_rampdown(10, 10) == 1.0
    assert sigmoid_rampdown(50, 10) == 1.0
    assert sigmoid_rampdown(5, 10) == pytest.approx(math.exp(-12.5 / 4))
    assert sigmoid_rampdown(0, 10) == pytest.approx(math.exp(-12.5))
    assert sigmoid_rampdown(0, 10, k=12.0) == pytest.approx(math.exp(-12.0))


def test_ramp_schedule_official_mmt_fractions():
    r = RampSchedule.from_fractions(7000, 5.0, 1000 / 7000, 250 / 7000, 250 / 7000, k=12.0)
    assert (r.start, r.rampup, r.rampdown) == (1000, 250, 250)
    assert r.weight(0) == 0.0 and r.weight(999) == 0.0
    assert r.weight(1000) == pytest.approx(5 * math.exp(-5))
    assert r.weight(1125) == pytest.approx(5 * math.exp(-1.25))
    assert r.weight(1250) == 5.0 and r.weight(6750) == 5.0
    assert r.weight(6875) == pytest.approx(5 * math.exp(-12.0 / 4))
    assert r.weight(6999) == pytest.approx(5 * math.exp(-12.0 * (1 - 1 / 250) ** 2))
    # scaled to a 20-iteration profile: a non-zero ramp lasts at least one iteration
    short = RampSchedule.from_fractions(20, 5.0, 1000 / 7000, 250 / 7000, 250 / 7000)
    assert (short.start, short.rampup, short.rampdown) == (3, 1, 1)
    assert short.weight(2) == 0.0 and short.weight(3) == pytest.approx(5 * math.exp(-5)) and short.weight(4) == 5.0
    with pytest.raises(ValueError, match="fraction"):
        RampSchedule.from_fractions(100, 1.0, start=1.5)


def test_unlabeled_stream_is_seeded_epoch_permutation():
    s = UnlabeledStream(5, 2, seed=3)
    first = [i for it in range(5) for i in s.indices(it)]  # 10 draws = 2 epochs
    assert sorted(first[:5]) == list(range(5)) and sorted(first[5:]) == list(range(5))
    again = UnlabeledStream(5, 2, seed=3)
    assert [i for it in range(5) for i in again.indices(it)] == first
    assert again.indices(4) == s.indices(4)  # random access, no state
    other = [i for it in range(5) for i in UnlabeledStream(5, 2, seed=4).indices(it)]
    assert other != first
    assert s.rng(7).random() == UnlabeledStream(5, 2, seed=3).rng(7).random()
    with pytest.raises(ValueError):
        UnlabeledStream(0, 2, seed=0)


def test_image_perturbations():
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    a = color_jitter(img, np.random.default_rng(1))
    b = color_jitter(img, np.random.default_rng(1))
    assert a.dtype == np.uint8 and a.shape == img.shape and np.array_equal(a, b) and not np.array_equal(a, img)
    # zero-strength jitter is the identity
    assert np.array_equal(color_jitter(img, np.random.default_rng(1), 0.0, 0.0, 0.0), img)
    # erasing: p=1 fills one rectangle with the mean colour, p=0 is the identity
    e = random_erase(img, np.random.default_rng(2), p=1.0)
    changed = np.any(e != img, axis=2)
    rows, cols = np.nonzero(changed)
    assert changed.sum() > 0
    box = e[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    assert np.all(box == np.rint(img.reshape(-1, 3).mean(0)).astype(np.uint8))
    assert random_erase(img, np.random.default_rng(2), p=0.0) is img
    # dihedral: a permutation of the pixels, 3 draws always
    d = dihedral(img, np.random.default_rng(5))
    assert sorted(d.reshape(-1, 3).tolist()) == sorted(img.reshape(-1, 3).tolist())


def test_flip_boxes():
    b = torch.tensor([[2.0, 1.0, 5.0, 4.0]])
    assert flip_boxes(b, 10).tolist() == [[5.0, 1.0, 8.0, 4.0]]
    assert torch.equal(flip_boxes(flip_boxes(b, 10), 10), b)
