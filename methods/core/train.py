"""The shared training loop of every Mask R-CNN method.

:func:`train` runs SGD on a detection model (anything called as ``model(images, targets) -> loss dict``
in train mode, normally :func:`~methods.core.model.build_model`'s) for ``profile.iterations``
iterations and takes care of:

- **schedule**: SGD (``profile.lr``/``momentum``/``weight_decay``), linear warm-up from
  ``warmup_factor * lr`` over ``warmup_iters``, x0.1 at each ``lr_steps`` fraction of the iterations;
- **stability**: global gradient-norm clipping (``grad_clip``), AMP (fp16 + GradScaler) on CUDA only,
  and a :class:`TrainingDivergedError` on a non-finite loss, raised *before* the bad step so the last
  checkpoint stays good;
- **data**: a seeded epoch-wise shuffle (epoch ``e`` uses ``numpy.random.default_rng([seed, 1, e])``)
  and per-iteration augmentation streams (``default_rng([seed, 2, iteration])``); both are pure
  functions of (seed, iteration), so resuming needs no data-loader state;
- **checkpoints** every ``checkpoint_every`` iterations and at the end (atomic, ``weights_only``-
  loadable, with optimizer, scaler, RNG and hook state): calling :func:`train` again with the same
  ``workdir`` and ``stage`` resumes and gives, on CPU, bit-identical weights to an uninterrupted run;
- progress (iteration, losses, lr, it/s, ETA): a tqdm bar on a TTY, a line per 10 % or 60 s in a log
  (``benchmark.progress``); silent with ``progress=False`` (and on DDP ranks other than 0);
- **DDP** when a process group of several ranks is up (``torchrun``, see :mod:`benchmark.distributed`):
  DistributedDataParallel, rank ``r`` takes batch ``i * N + r`` at iteration ``i``, lr times
  :func:`benchmark.distributed.lr_factor`, rank 0 writes checkpoints (with every rank's RNG state)
  that all ranks resume from.

Extension: pass ``hook=`` an object (or a plain callable used as ``extra_losses``) with any of

- ``extra_losses(ctx: StepContext) -> dict[str, Tensor]``: extra loss terms added to the model's
  (e.g. a consistency loss on unlabeled data computed with an EMA teacher);
- ``after_step(model, iteration)``: called after each optimizer step (e.g. EMA update);
- ``state_dict()`` / ``load_state_dict(state)``: hook state saved in checkpoints (tensors, numbers,
  lists, dicts only), so resumed runs stay exact.

Trainable modules a method adds (adaptors, extra heads) must be sub-modules of ``model`` so that the
optimizer and checkpoints include them.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmark import distributed as bdist

from .augment import Augment
from .checkpoint import CheckpointError, load_checkpoint, rng_state, save_atomic, set_rng_state
from .helpers import stable_hash
from .targets import TrainSample, as_train_sample, sample_to_target, validate_sample

ORDER_STREAM = 1
AUGMENT_STREAM = 2

#: a batch source: ``(iteration, batch_size) -> samples``; must be a pure function of its arguments
BatchFn = Callable[[int, int], Sequence[Any]]


class TrainingDivergedError(RuntimeError):
    """A loss (or, without AMP, the gradient norm) became NaN/inf.

    Attributes:
        iteration: 0-based iteration at which it happened.
        losses: the loss values of that iteration.
        checkpoint: the last good checkpoint (``None`` if none was written yet).
    """

    def __init__(self, iteration: int, losses: dict[str, float], checkpoint: Path | None) -> None:
        self.iteration, self.losses, self.checkpoint = iteration, losses, checkpoint
        shown = ", ".join(f"{k}={v:.4g}" for k, v in losses.items())
        where = (f"the last good checkpoint {checkpoint} is kept" if checkpoint is not None
                 else "no checkpoint had been written yet")
        bad = [k for k, v in losses.items() if not math.isfinite(v)]
        #: what went non-finite: ``"loss"`` or ``"gradient norm"`` (finite losses, NaN/inf gradients)
        self.what = "gradient norm" if bad == ["grad_norm"] else "loss"
        what = ("non-finite gradient norm although every loss was finite" if self.what == "gradient norm"
                else f"non-finite loss ({', '.join(bad)})")
        super().__init__(
            f"training diverged at iteration {iteration}: {what} ({shown}); {where}. "
            f"Lower profile.lr, lengthen profile.warmup_iters or set profile.grad_clip, then rerun."
        )


@dataclasses.dataclass
class StepContext:
    """What a hook's ``extra_losses`` sees at each iteration.

    Attributes:
        model: the model (train mode). images / targets: the batch on the device (targets as given to the
        model: ``boxes``, ``labels``, ``masks``, ``mask_valid``). samples: the augmented
        :class:`TrainSample` list. losses: the model's loss dict for this batch. iteration: 0-based.
        device: torch device string. seed: the run seed.
    """

    model: nn.Module
    images: list[torch.Tensor]
    targets: list[dict[str, torch.Tensor]]
    samples: list[TrainSample]
    losses: dict[str, torch.Tensor]
    iteration: int
    device: str
    seed: int


@dataclasses.dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes:
        iterations: iterations completed in total (including earlier, resumed ones).
        finished: whether the schedule ran to the end (False after ``stop_after``).
        resumed_from: iteration the run resumed at (0 = fresh start).
        history: per iteration, the loss values plus ``"loss"`` (total), ``"lr"`` and ``"grad_norm"``.
        seconds: wall time of this call.
        checkpoint: path of the latest checkpoint.
    """

    iterations: int
    finished: bool
    resumed_from: int
    history: list[dict[str, float]]
    seconds: float
    checkpoint: Path


def lr_at(iteration: int, profile: Any, total: int) -> float:
    """Learning rate at a 0-based iteration: linear warm-up, then x0.1 at each ``lr_steps`` fraction."""
    lr = float(profile.lr)
    if profile.warmup_iters > 0 and iteration < profile.warmup_iters:
        alpha = iteration / profile.warmup_iters
        lr *= profile.warmup_factor * (1 - alpha) + alpha
    for frac in profile.lr_steps:
        if iteration >= int(frac * total):
            lr *= 0.1
    return lr


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The data order of one epoch (a permutation of ``range(n)``)."""
    return np.random.default_rng([seed, ORDER_STREAM, epoch]).permutation(n)


class EpochSampler:
    """Seeded epoch-wise shuffling of ``range(n)``: ``indices(i)`` (batch ``i``) is a pure function of
    ``(seed, stream, i)``; epoch ``e`` is ``numpy.random.default_rng([seed, stream, e]).permutation(n)``."""

    def __init__(self, n: int, batch_size: int, seed: int, stream: int = ORDER_STREAM) -> None:
        self.n, self.bs, self.seed, self.stream = int(n), int(batch_size), int(seed), int(stream)
        self._cache: dict[int, np.ndarray] = {}

    def indices(self, iteration: int) -> list[int]:
        out = []
        for j in range(iteration * self.bs, (iteration + 1) * self.bs):
            epoch, pos = divmod(j, self.n)
            if epoch not in self._cache:
                if len(self._cache) > 2:
                    self._cache.clear()
                self._cache[epoch] = np.random.default_rng([self.seed, self.stream, epoch]).permutation(self.n)
            out.append(int(self._cache[epoch][pos]))
        return out


#: build iteration ``i + 1``'s batch in a background thread while iteration ``i`` trains. Only for a
#: sample list (its sampler and the per-iteration augmentation streams are pure functions of the iteration,
#: and neither touches torch's global RNG, so the numbers are identical); a batch function runs inline.
PREFETCH = True


def prepare_batch(batch_fn: BatchFn, it: int, bs: int, seed: int, augment: Augment | None):
    """Iteration ``it``'s ``(samples, images, targets)`` on the CPU: sampled, augmented, converted."""
    rng = np.random.default_rng([seed, AUGMENT_STREAM, it])
    batch = [as_train_sample(s) for s in batch_fn(it, bs)]
    if augment is not None:
        batch = [augment(s, rng) for s in batch]
    pairs = [sample_to_target(s) for s in batch]
    return batch, [p[0] for p in pairs], [p[1] for p in pairs]


class _BatchLoader:
    """:func:`prepare_batch` per iteration, optionally one iteration ahead in a worker thread."""

    def __init__(self, batch_fn: BatchFn, bs: int, seed: int, augment: Augment | None, total: int,
                 *, prefetch: bool, index: Callable[[int], int] | None = None) -> None:
        self.args, self.total = (batch_fn, bs, seed, augment), total
        #: iteration -> sample index; under DDP each rank takes its own slice of the global batch
        self.index = index or (lambda it: it)
        self.pool = None
        self.pending: dict[int, Any] = {}
        if prefetch:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(1, thread_name_prefix="prefetch")

    def get(self, it: int):
        fut = self.pending.pop(it, None)
        out = fut.result() if fut is not None else prepare_batch(self.args[0], self.index(it), *self.args[1:])
        if self.pool is not None and it + 1 < self.total:
            self.pending[it + 1] = self.pool.submit(prepare_batch, self.args[0], self.index(it + 1), *self.args[1:])
        return out

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _fingerprint(**parts: Any) -> str:
    return stable_hash(parts)


def _hook_call(hook: Any, name: str) -> Callable | None:
    if hook is None:
        return None
    if name == "extra_losses" and not hasattr(hook, "extra_losses") and callable(hook):
        return hook
    fn = getattr(hook, name, None)
    return fn if callable(fn) else None


def _batch_source(data: Sequence[Any] | BatchFn, batch_size: int, seed: int) -> tuple[BatchFn, int | str]:
    """``(batch_fn, n_data)``: a given batch function as is, or a seeded epoch-wise shuffle of the samples."""
    if callable(data) and not isinstance(data, Sequence):
        return data, "fn"
    samples = [as_train_sample(x) for x in data]
    if not samples:
        raise ValueError("no training samples given")
    for s in samples:
        validate_sample(s)
    sampler = EpochSampler(len(samples), batch_size, seed)

    def batch_fn(it: int, _bs: int) -> list[TrainSample]:
        return [samples[i] for i in sampler.indices(it)]

    return batch_fn, len(samples)


@dataclasses.dataclass
class _Loop:
    """The mutable state of one :func:`train` call (model, optimizer, scaler, checkpoint, history)."""

    model: nn.Module
    params: list[nn.Parameter]
    opt: torch.optim.Optimizer
    scaler: Any
    use_amp: bool
    dev: torch.device
    hook: Any
    stage: str
    total: int
    ckpt_path: Path
    fingerprint: str
    ddp: Any = None
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)
    last_good: Path | None = None

    def __post_init__(self) -> None:
        self.extra_fn = _hook_call(self.hook, "extra_losses")
        self.after_fn = _hook_call(self.hook, "after_step")
        #: the model itself, or its DistributedDataParallel wrapper under torchrun
        self.forward = bdist.wrap(self.model, str(self.dev))


def _start_loop(model: nn.Module, profile: Any, *, device: str, hook: Any, stage: str, total: int,
                ckpt_path: Path, fingerprint: str) -> _Loop:
    """Move ``model`` to ``device`` in train mode and build its optimizer and AMP scaler."""
    dev = torch.device(device)
    model.to(dev)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, profile)
    use_amp = bool(profile.amp) and dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    return _Loop(model=model, params=params, opt=opt, scaler=scaler, use_amp=use_amp, dev=dev, hook=hook,
                 stage=stage, total=total, ckpt_path=ckpt_path, fingerprint=fingerprint, ddp=bdist.context())


def make_optimizer(params: list[nn.Parameter], profile: Any) -> torch.optim.Optimizer:
    """The profile's optimizer: SGD (``momentum``) or AdamW (``momentum`` as beta1, decoupled weight decay)."""
    kind = getattr(profile, "optimizer", "sgd")
    if kind == "adamw":
        # fused: one kernel per step instead of ~10 small ops per tensor (the unfused CPU step cost 8 %)
        fused = bool(params) and all(p.device.type in ("cpu", "cuda") for p in params)
        return torch.optim.AdamW(params, lr=profile.lr, betas=(profile.momentum, 0.999),
                                 weight_decay=profile.weight_decay, fused=fused or None)
    if kind != "sgd":
        raise ValueError(f"profile.optimizer={kind!r} is not supported; choose sgd or adamw")
    return torch.optim.SGD(params, lr=profile.lr, momentum=profile.momentum, weight_decay=profile.weight_decay)


def _resume(loop: _Loop, seed: int) -> int:
    """Restore the checkpoint if one exists (else seed the global RNGs); the iteration to start at.

    Under DDP every rank resumes from rank 0's checkpoint, each with its own saved RNG state.
    """
    start = 0
    read_path = Path(bdist.broadcast(str(loop.ckpt_path)))
    if bdist.broadcast(read_path.exists()):
        ck = load_checkpoint(read_path)
        if ck.get("fingerprint") != loop.fingerprint:
            raise CheckpointError(
                f"checkpoint {loop.ckpt_path} was written by a run with different settings (seed, profile, data, "
                f"model or method options). Delete it (or use a fresh workdir) to retrain."
            )
        loop.model.load_state_dict(ck["model"])
        loop.opt.load_state_dict(ck["optimizer"])
        if ck.get("scaler"):
            loop.scaler.load_state_dict(ck["scaler"])
        ddp = loop.ddp
        set_rng_state(ck["rng_ranks"][ddp.rank] if ddp and ck.get("rng_ranks") else ck["rng"])
        fn = _hook_call(loop.hook, "load_state_dict")
        if fn is not None and ck.get("hook") is not None:
            fn(ck["hook"])
        start = int(ck["iteration"])
        loop.history = [dict(h) for h in ck["history"]]
    else:
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
    loop.last_good = loop.ckpt_path if loop.ckpt_path.exists() else None
    return start


def _save_checkpoint(loop: _Loop, iteration: int) -> None:
    """Write the checkpoint atomically; under DDP rank 0 writes it with every rank's RNG state."""
    ddp = loop.ddp
    rngs = bdist.all_gather(rng_state()) if ddp else None
    if ddp and ddp.rank != 0:
        bdist.barrier()
        return
    fn = _hook_call(loop.hook, "state_dict")
    state = {
        "format": "nuclei-maskrcnn-checkpoint/1",
        "fingerprint": loop.fingerprint,
        "stage": loop.stage,
        "iteration": iteration,
        "total": loop.total,
        "finished": iteration >= loop.total,
        "model": loop.model.state_dict(),
        "optimizer": loop.opt.state_dict(),
        "scaler": loop.scaler.state_dict() if loop.use_amp else {},
        "rng": rng_state(),
        "hook": fn() if fn is not None else None,
        "history": loop.history,
        **({"rng_ranks": rngs} if rngs else {}),
    }
    save_atomic(state, loop.ckpt_path)
    loop.last_good = loop.ckpt_path
    bdist.barrier()


def _step(loop: _Loop, it: int, lr: float, batch: list[TrainSample], images: list[torch.Tensor],
          targets: list[dict[str, torch.Tensor]], profile: Any, device: str, seed: int) -> dict[str, float]:
    """Forward (plus the hook's extra losses), divergence check, backward, clip, optimizer and hook step.

    Returns the iteration's history row (every loss, ``loss``, ``lr``, ``grad_norm``).
    """
    extra_fn, after_fn = loop.extra_fn, loop.after_fn
    model, opt, scaler = loop.model, loop.opt, loop.scaler
    with torch.autocast(device_type=loop.dev.type, dtype=torch.float16, enabled=loop.use_amp):
        losses = loop.forward(images, targets)
        if extra_fn is not None:
            ctx = StepContext(model, images, targets, batch, losses, it, device, seed)
            losses = {**losses, **extra_fn(ctx)}
    loss = sum(v.float() for v in losses.values())
    if loop.ddp:  # every parameter gets a gradient each step, as DDP's reducer expects
        loss = loss + 0.0 * sum(p.sum() for p in loop.params)
    values = {k: float(v.detach()) for k, v in losses.items()}
    if bdist.any_true(not all(math.isfinite(v) for v in values.values())):
        raise TrainingDivergedError(it, values, loop.last_good)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    grad_norm = float("nan")
    if profile.grad_clip and profile.grad_clip > 0:
        scaler.unscale_(opt)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(loop.params, profile.grad_clip))
        if not loop.use_amp and not math.isfinite(grad_norm):
            raise TrainingDivergedError(it, {**values, "grad_norm": grad_norm}, loop.last_good)
    scaler.step(opt)
    scaler.update()
    if after_fn is not None:
        after_fn(model, it)
    return {**values, "loss": float(loss.detach()), "lr": lr, "grad_norm": grad_norm}


def _progress_bar(progress: bool, total: int, start: int, stage: str) -> Any:
    if not progress or bdist.rank() != 0:
        return None
    from benchmark.progress import progress_bar

    return progress_bar(total, initial=start, desc=stage, unit="it", dynamic_ncols=True, smoothing=0.1)


def _show(bar: Any, row: dict[str, float], lr: float) -> None:
    if bar is None:
        return
    losses = {k: v for k, v in row.items() if k not in ("loss", "lr", "grad_norm")}
    bar.set_postfix_str(
        f"loss={row['loss']:.3f} "
        + " ".join(f"{k.replace('loss_', '')}={v:.3f}" for k, v in losses.items())
        + f" lr={lr:.2g}",
        refresh=False,
    )
    bar.update(1)  # after the postfix, so that a log line shows this iteration's losses


def _iterate(loop: _Loop, start: int, loader: _BatchLoader, profile: Any, *, seed: int, device: str,
             bar: Any, stop_after: int | None) -> bool:
    """Iterations ``start .. loop.total - 1``, checkpointing on schedule; whether the schedule finished."""
    total = loop.total
    finished = start >= total
    for it in range(start, total):
        lr = lr_at(it, profile, total) * bdist.lr_factor()
        for g in loop.opt.param_groups:
            g["lr"] = lr
        batch, images, targets = loader.get(it)
        images = [img.to(loop.dev, non_blocking=True) for img in images]
        targets = [{k: v.to(loop.dev, non_blocking=True) for k, v in t.items()} for t in targets]
        loop.history.append(_step(loop, it, lr, batch, images, targets, profile, device, seed))
        done = it + 1
        _show(bar, loop.history[-1], lr)
        if stop_after is not None and done >= stop_after and done < total:
            break
        if done % max(1, int(profile.checkpoint_every)) == 0 or done == total:
            _save_checkpoint(loop, done)
        if done == total:
            finished = True
    return finished


def train(
    model: nn.Module,
    data: Sequence[Any] | BatchFn,
    profile: Any,
    *,
    seed: int,
    device: str,
    workdir: str | Path,
    hook: Any = None,
    augment: Augment | None = Augment(),
    progress: bool = True,
    stage: str = "train",
    iterations: int | None = None,
    stop_after: int | None = None,
    config: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` in place, resuming from ``workdir/<stage>_checkpoint.pt`` if present.

    Args:
        model: a detection model; moved to ``device`` and left in train mode.
        data: training samples (:class:`TrainSample`, ``Patch`` or ``(image, label)``), shuffled per epoch,
            or a batch function ``(iteration, batch_size) -> samples`` (it must be deterministic).
        profile: schedule (``iterations``, ``batch_size``, ``lr``, ``momentum``, ``weight_decay``,
            ``warmup_iters``, ``warmup_factor``, ``lr_steps``, ``grad_clip``, ``amp``, ``checkpoint_every``).
        seed: seeds weights-independent randomness: global RNGs at a fresh start, data order, augmentation.
            (Seed the model's initialisation yourself before building it.)
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        workdir: folder for the checkpoint (created if missing).
        hook: optional extension object (see the module doc) or a callable ``(StepContext) -> dict``.
        augment: augmentation applied per sample (``None`` = off).
        progress: show progress (``benchmark.progress``).
        stage: checkpoint name prefix, so one workdir can hold several stages (teacher, student).
        iterations: schedule length (default ``profile.iterations``).
        stop_after: return after this many total iterations *without* writing a checkpoint, as if
            the process had been killed (for tests and time-boxed runs); ``None`` = run to the end.
        config: extra settings that must match for a checkpoint to be resumed (e.g. the method config).

    Returns:
        a :class:`TrainResult`.

    Raises:
        TrainingDivergedError: a non-finite loss; the model is left at the failing iteration's weights,
            the checkpoint on disk is the last good one.
        CheckpointError: the existing checkpoint belongs to a different run configuration.
    """
    t0 = time.perf_counter()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    total = int(iterations if iterations is not None else profile.iterations)
    if total <= 0:
        raise ValueError(f"iterations must be positive, got {total}")
    bs = int(profile.batch_size)
    batch_fn, n_data = _batch_source(data, bs, seed)
    ddp = bdist.context()
    parts = {"ddp": bdist.describe()} if ddp else {}  # single-process fingerprints stay as they were
    fingerprint = _fingerprint(
        seed=seed, stage=stage, total=total, batch_size=bs, n_data=n_data,
        profile=profile.to_dict() if hasattr(profile, "to_dict") else repr(profile),
        model=getattr(model, "nuclei_config", type(model).__name__), augment=augment.config() if augment else None,
        config=config or {}, **parts,
    )
    loop = _start_loop(model, profile, device=device, hook=hook, stage=stage, total=total,
                       ckpt_path=workdir / f"{stage}_checkpoint.pt", fingerprint=fingerprint)
    start = _resume(loop, seed)
    loader = _BatchLoader(batch_fn, bs, seed, augment, total, prefetch=PREFETCH and n_data != "fn",
                          index=(lambda it: it * ddp.world + ddp.rank) if ddp else None)
    bar = _progress_bar(progress, total, start, stage)
    try:
        finished = _iterate(loop, start, loader, profile, seed=seed, device=device, bar=bar, stop_after=stop_after)
    finally:
        loader.close()
        if bar is not None:
            bar.close()
    if ddp:  # DDP keeps the parameters equal (BatchNorm running stats: rank 0's, broadcast each forward)
        bdist.note(f"{stage}_weights", _weights_digest(model))
    return TrainResult(
        iterations=len(loop.history), finished=finished, resumed_from=start, history=loop.history,
        seconds=time.perf_counter() - t0, checkpoint=loop.ckpt_path,
    )


def _weights_digest(model: nn.Module) -> str:
    import hashlib

    blob = b"".join(p.detach().cpu().numpy().tobytes() for p in model.parameters())
    return hashlib.sha256(blob).hexdigest()[:16]


def history_summary(history: list[dict[str, float]], last: int = 20) -> dict[str, float]:
    """Mean of every ``loss*`` value over the last ``last`` iterations of a training history."""
    if not history:
        return {}
    tail = history[-min(last, len(history)):]
    keys = [k for k in tail[-1] if k.startswith("loss")]
    return {k: float(sum(h.get(k, 0.0) for h in tail) / len(tail)) for k in keys}
