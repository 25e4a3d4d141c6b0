"""Training the base net f on one fold: weighted cross-entropy, early stopping on validation accuracy.
Every net (see `nets`) gets this same trainer.

The images stay resident on the training device (uint8, so FER+ at 100x100 is ~0.3 GB) and batches
are gathered by index, which removes the DataLoader from the hot loop. The forward pass runs in bf16
autocast where `base_net.precision` resolves to bf16 (by default on a GPU only). The learning rate
warms up linearly, then follows a cosine decay, and the gradient norm is clipped: the published recipe
(plain Adam, LSTM over 144 steps) sometimes stalls or diverges early, and these keep every fold
trainable without changing the model. Options a recipe search can turn on (all off by default): a
one-cycle schedule, an average of the weights (EMA), and RandAugment and mixup/cutmix (`recipe`).
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from correctsweep import nets
from correctsweep.atomic import atomic_path, write_json
from correctsweep.config import BaseNetConfig, as_dict, from_mapping, settings_of
from correctsweep.errors import CorrectsweepError, SpecError, UntrustedCode
from correctsweep.hashing import sha256, verified_bytes
from correctsweep.nets import BaseNet
from correctsweep.recipe import mix, randaugment


def pick_device(name: str, key: str = "base_net.device") -> torch.device:
    """The torch device that `name` (auto, cpu or cuda) means on this machine; `key` names the spec
    field in the one-line error when cuda is asked for and none is visible."""
    cuda = torch.cuda.is_available()
    if name == "cuda" and not cuda:
        raise CorrectsweepError(f"{key} is cuda but no GPU is visible here; set it to auto or cpu")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and cuda) else "cpu")


def uses_bf16(cfg: BaseNetConfig, device: torch.device) -> bool:
    """Whether training on `device` runs in bf16 autocast: base_net.precision, auto meaning on a GPU."""
    return cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per-image random shift (zero padded, up to 1/12 of the side) and horizontal flip of a uint8
    batch on its device. Hand-written because torchvision's v2 transforms draw one set of parameters
    per call, and a call per image would cost more than the step on a GPU."""
    b, _, h, w = x.shape
    pad = max(1, h // 12)
    padded = F.pad(x, (pad, pad, pad, pad))
    dy, dx, flip = (torch.randint(0, 2 * pad + 1, (b,), generator=generator),
                    torch.randint(0, 2 * pad + 1, (b,), generator=generator),
                    torch.rand(b, generator=generator) < 0.5)
    rows = (dy[:, None] + torch.arange(h)).to(x.device)
    cols = (dx[:, None] + torch.arange(w)).to(x.device)
    cols = torch.where(flip.to(x.device)[:, None], cols.flip(1), cols)
    images = torch.arange(b, device=x.device)[:, None, None, None]
    channels = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[images, channels, rows[:, None, :, None], cols[:, None, None, :]]


@dataclass
class TrainResult:
    best_epoch: int
    """Epoch (1-based) whose weights were kept."""
    val_accuracy: float
    """Validation accuracy of the kept weights."""
    epochs_run: int
    seconds: float
    images_per_second: float
    """Training throughput (forward + backward), validation excluded."""
    history: list[dict] = field(default_factory=list)
    """Per epoch: epoch, train_loss, val_accuracy, lr, seconds."""


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """w_i = N / n_i over the classes present; absent classes (the excluded one) weigh 0."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / np.maximum(counts, 1), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def weighted_cross_entropy(logits: torch.Tensor, y: torch.Tensor, weights: torch.Tensor,
                           smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy weighted by the target's class weight, normalised by the batch's weights, with
    label smoothing inside each row. torch's CrossEntropyLoss(weight, label_smoothing) weighs each
    class's smoothing term by that class's weight instead: with FER+'s weights (168 for Disgust, 2.5
    for Neutral) that term outweighs the true label, and every fold collapsed onto Disgust."""
    logp = torch.log_softmax(logits.float(), dim=1)
    per_row = -(1 - smoothing) * logp.gather(1, y[:, None])[:, 0] - smoothing * logp.mean(1)
    w = weights[y]
    return (w * per_row).sum() / w.sum()


@torch.no_grad()
def predict(model: BaseNet, images: torch.Tensor, device: torch.device, batch_size: int = 512,
            bf16: bool = False) -> torch.Tensor:
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out.append(model(x).argmax(1))
    return torch.cat(out).cpu()


class EarlyStopping:
    """Keeps the epoch with the highest validation accuracy (averaged over the last `val_window`
    epochs), ties going to the lower train loss; stops after `patience` epochs without one, but
    never before `min_epochs`."""

    def __init__(self, cfg: BaseNetConfig):
        self.cfg, self.history, self.best, self.best_state, self.waited = cfg, [], None, None, 0

    def update(self, record: dict, model: BaseNet) -> None:
        self.history.append(record)
        score = float(np.mean([h["val_accuracy"] for h in self.history[-self.cfg.val_window:]]))
        if self.best is None or (score, -record["train_loss"]) > (self.best[0], -self.best[1]["train_loss"]):
            self.best, self.waited = (score, record), 0
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.waited += 1

    def should_stop(self) -> bool:
        return self.waited >= self.cfg.patience and len(self.history) >= self.cfg.min_epochs

    @property
    def best_record(self) -> dict:
        return self.best[1]


def _optimiser(model: BaseNet, cfg: BaseNetConfig, steps_per_epoch: int):
    """AdamW and base_net.schedule over the whole budget: cosine, a linear warm-up then a cosine decay to zero,
    or one_cycle, torch's OneCycleLR peaking at base_net.lr."""
    total, warmup = cfg.epochs * steps_per_epoch, cfg.warmup_epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.schedule == "one_cycle":
        return optimizer, torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: (s + 1) / warmup if s < warmup else
                                                 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup))))
    return optimizer, schedule


def ema_update(decay: float) -> Callable:
    """AveragedModel's multi_avg_fn for an exponential moving average whose decay warms up: after n updates
    (n = 1, 2, ...) the next uses min(decay, (1 + n) / (10 + n)), timm's and TensorFlow's rule. A fixed 0.999
    from the first step keeps 0.999^550 = 58 % of the random initial weights after 5 FER+ epochs at batch 128:
    in the recipe search those averages validated at 0.005-0.15, and the scheduler stopped every one at its
    first rung."""

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        if not averaged[0].is_floating_point():  # BatchNorm's batch count: the net's own
            torch._foreach_copy_(averaged, current)
            return
        n = int(num_averaged)  # AveragedModel reads it every step anyway
        torch._foreach_lerp_(averaged, current, 1 - min(decay, (1 + n) / (10 + n)))

    return update


def _averaged(model: BaseNet, cfg: BaseNetConfig) -> torch.optim.swa_utils.AveragedModel | None:
    """The exponential moving average of the weights base_net.ema_decay asks for (ema_update), BatchNorm's
    running statistics included (use_buffers), or None."""
    if not cfg.ema_decay:
        return None
    return torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=ema_update(cfg.ema_decay), use_buffers=True)


@dataclass
class _Loop:
    """What every training step uses: the net, its loss, optimiser and schedule, the settings, the seeded
    generator of batch order and augmentation, whether steps run in bf16, the average of the weights (if
    any) and the seeded generator of mixup/cutmix."""

    model: BaseNet
    loss_fn: Callable
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    cfg: BaseNetConfig
    generator: torch.Generator
    bf16: bool
    averaged: torch.optim.swa_utils.AveragedModel | None
    mixing: np.random.Generator

    @property
    def evaluated(self) -> BaseNet:
        """The net each epoch validates and the trainer keeps: the average of the weights, or the net."""
        return self.averaged.module if self.averaged is not None else self.model


def _train_epoch(loop: _Loop, x_train: torch.Tensor, y_train: torch.Tensor) -> torch.Tensor:
    """One pass over the training images in a seeded random order; returns the summed loss (on the
    device: reading it would sync the GPU every step)."""
    model, loss_fn, optimizer, schedule, cfg, generator, bf16 = (loop.model, loop.loss_fn, loop.optimizer,
                                                                 loop.schedule, loop.cfg, loop.generator, loop.bf16)
    model.train()
    device = x_train.device
    loss_sum = torch.zeros((), device=device)
    for batch in torch.randperm(len(x_train), generator=generator).to(device).split(cfg.batch_size):
        if len(batch) < 2:  # BatchNorm cannot train on a single image
            continue
        x = augment(x_train[batch], generator) if cfg.augment else x_train[batch]
        if cfg.randaugment_ops:
            x = randaugment(x, cfg)
        mixed = mix(x, cfg, loop.mixing)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(mixed.x if mixed else x)
            loss = mixed.loss(loss_fn, logits, y_train[batch]) if mixed else loss_fn(logits, y_train[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        schedule.step()
        if loop.averaged is not None:
            loop.averaged.update_parameters(model)
        loss_sum += loss.detach() * len(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return loss_sum


def _trained_loss(targets: np.ndarray, num_classes: int, excluded_index: int | None, smoothing: float, device):
    """The loss over the trained classes' logits only, and the targets as columns of those: label
    smoothing would otherwise put mass on the excluded class, whose logit is -inf (0 x -inf is NaN
    even at weight 0)."""
    trained = torch.tensor([i for i in range(num_classes) if i != excluded_index])
    column = torch.full((num_classes,), -1, dtype=torch.long)
    column[trained] = torch.arange(len(trained))
    weights = class_weights(targets, num_classes)[trained].to(device)
    trained = trained.to(device)
    loss_fn = lambda logits, y: weighted_cross_entropy(logits[:, trained], y, weights, smoothing)
    return loss_fn, column[torch.from_numpy(targets)].to(device)


@dataclass
class TrainSet:
    """What f is trained on: the images, each one's class index, and the rows that train and validate it."""

    images: torch.Tensor
    """uint8 [N, C, H, W], pixels 0..255."""
    targets: np.ndarray
    """[N] class indices 0..K-1."""
    train_idx: np.ndarray
    """Rows f trains on; the excluded class must be absent from them."""
    val_idx: np.ndarray
    """Rows whose accuracy picks the kept epoch."""
    num_classes: int
    excluded_index: int | None = None
    """The class index f never sees (its logit is masked), or None: the full model."""


def train_base_net(data: TrainSet, cfg: BaseNetConfig, seed: int,
                   on_epoch: Callable[[dict], None] | None = None) -> tuple[BaseNet, TrainResult]:
    """Train f on data.train_idx and keep the epoch with the best validation accuracy on data.val_idx."""
    torch.manual_seed(seed)
    device = pick_device(cfg.device)
    bf16 = uses_bf16(cfg, device)
    model = nets.build(cfg, data.num_classes, data.excluded_index).to(device)
    images, targets, train_idx, val_idx = data.images, data.targets, data.train_idx, data.val_idx
    x_train = images[torch.from_numpy(train_idx)].to(device)
    loss_fn, y_train = _trained_loss(targets[train_idx], data.num_classes, data.excluded_index, cfg.label_smoothing,
                                     device)
    x_val, y_val = images[torch.from_numpy(val_idx)], torch.from_numpy(targets[val_idx])
    optimizer, schedule = _optimiser(model, cfg, math.ceil(len(train_idx) / cfg.batch_size))
    loop = _Loop(model, loss_fn, optimizer, schedule, cfg, torch.Generator().manual_seed(seed), bf16,
                 _averaged(model, cfg), np.random.default_rng(seed))
    stopping, train_seconds, started = EarlyStopping(cfg), 0.0, time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        loss_sum = _train_epoch(loop, x_train, y_train)
        train_seconds += time.perf_counter() - t0
        if not torch.isfinite(loss_sum):  # checked once an epoch: a per-step check would sync the GPU
            raise CorrectsweepError(f"the base net's training loss became {loss_sum.item()} in epoch {epoch}; "
                                    "lower base_net.lr or keep base_net.grad_clip > 0")
        val_acc = (predict(loop.evaluated, x_val, device, bf16=bf16) == y_val).float().mean().item()
        record = {"epoch": epoch, "train_loss": loss_sum.item() / len(train_idx), "val_accuracy": val_acc,
                  "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - t0}
        stopping.update(record, loop.evaluated)
        if on_epoch:
            on_epoch(record | {"best_val_accuracy": stopping.best_record["val_accuracy"]})
        if stopping.should_stop():
            break
    model.load_state_dict(stopping.best_state)
    best, history = stopping.best_record, stopping.history
    return model, TrainResult(best["epoch"], best["val_accuracy"], len(history), time.perf_counter() - started,
                              len(train_idx) * len(history) / max(train_seconds, 1e-9), history)


def net_settings(cfg: BaseNetConfig) -> dict:
    """The base_net settings that build a net (the rest only train it), saved with the weights to rebuild it:
    the arch, its constructor's arguments, the memory format and the family's own settings."""
    return {"arch": cfg.arch, "init_args": cfg.init_args, "channels_last": cfg.channels_last} | {
        cfg.arch: as_dict(settings_of(cfg, cfg.arch))}


def save_model(model: BaseNet, folder: Path, meta: dict, cfg: BaseNetConfig) -> dict:
    """Weights as a plain tensor state dict (loaded with weights_only=True, so loading never
    unpickles arbitrary objects) plus JSON metadata, written last so its presence means complete.
    Returns the metadata as written, the weights' SHA-256 included. f's classifier (weight, bias) also goes
    to final_layer.npz, for analysts and the detectors that read it, without torch."""
    final = model.final_layer()
    if final is not None:
        with atomic_path(folder / "final_layer.npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, weight=final[0].numpy(), bias=final[1].numpy())
    with atomic_path(folder / "weights.pt") as tmp:
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, tmp)
        sha = sha256(tmp)
    meta = meta | {"weights_sha256": sha, "num_classes": model.num_classes, "excluded_index": model.excluded_index,
                   "net": net_settings(cfg)}
    write_json(folder / "model.json", meta)
    return meta


def load_model(folder: Path, device: torch.device | str = "cpu") -> tuple[BaseNet, dict]:
    """A saved net and its metadata, checked against the weights' SHA-256 recorded when it was saved;
    a broken or mismatched pair is a CorrectsweepError naming the folder (or the weights that do not verify)."""
    try:
        meta = json.loads((folder / "model.json").read_text())
        weights = verified_bytes(folder / "weights.pt", meta["weights_sha256"], folder / "model.json")
        cfg = from_mapping(BaseNetConfig, meta["net"], "base_net")
        model = nets.build(cfg, meta["num_classes"], meta["excluded_index"])
        model.load_state_dict(torch.load(io.BytesIO(weights), map_location=device, weights_only=True))
    except UntrustedCode as e:  # a module the net's record names, which only the user may import
        raise UntrustedCode(f"saved net {folder}: {e}") from None
    # JSONDecodeError is a ValueError; SpecError: settings this version does not know
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, EOFError, SpecError) as e:
        raise CorrectsweepError(f"saved net {folder} is broken ({str(e).splitlines()[0][:80]})") from None
    return model.to(device).eval(), meta
