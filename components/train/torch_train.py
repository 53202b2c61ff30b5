"""PyTorch training: batches streamed through a DataLoader, mixed precision (bf16 autocast on CPU,
fp16 autocast + GradScaler on CUDA), the spec's optimizer, LR schedule, label smoothing, class
weights and augmentation, early stopping on the validation split, and a checkpoint every epoch."""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler

from components.atomic import atomic_dir, atomic_file
from components.child_processes import main_script_hidden
from components.data.dataset import read_data_info
from components.imaging import Preprocessing
from components.models.architecture import Architecture
from components.models.torch_cnn import build_torch_model
from components.spec import AugmentSpec, TaskSpec
from components.train.common import Checkpoints, learning_rate, precision_note, publish_common
from components.train.loader import (DataSource, Split, class_weights, epoch_batches, open_run_data,
                                    shared_batch_count)
from components.train.tracking import epoch_log

WEIGHTS = "model.pt"


class _Batches(Dataset):
    """Item ``picked`` (an array of positions in the split) is one batch: a DataLoader worker reads it."""

    def __init__(self, source: DataSource, split: Split):
        self.source, self.split = source, split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, picked: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.from_numpy(self.source.batch(self.split.rows[picked])),
                torch.from_numpy(self.split.labels[picked]))


@dataclass(frozen=True)
class Ranks:
    """This process's place among a distributed training's processes (torchrun's RANK, WORLD_SIZE and
    LOCAL_RANK); one process by default. Rank 0 alone evaluates, writes and decides."""

    rank: int = 0
    world: int = 1
    local: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def decided(self, value):
        """Rank 0's ``value``, on every rank (what the others pass is ignored)."""
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def summed(self, *values: float) -> list[float]:
        """Each value summed over the ranks."""
        if self.world == 1:
            return list(values)
        total = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(total)
        return total.tolist()


class _EpochBatches(Sampler):
    """This rank's batches of one epoch (``loader.epoch_batches``). From the decoded cache, N ranks see the same
    global batches as one process does (torch's DistributedSampler deals each rank every N-th image of its own
    permutation instead). Set the epoch before iterating."""

    def __init__(self, source: DataSource, split: Split, batch_size: int, seed: int | None,
                 ranks: Ranks = Ranks()):
        self.source, self.split, self.batch_size, self.seed, self.ranks = source, split, batch_size, seed, ranks
        self.epoch = 0

    def __iter__(self):
        return iter(epoch_batches(self.source, self.split, self.batch_size, self.seed, self.epoch, self.ranks.rank,
                                  self.ranks.world))

    def __len__(self) -> int:
        return shared_batch_count(len(self.split), self.batch_size, self.ranks.world)


def _loader(source: DataSource, split: Split, batch_size: int, workers: int = 0,
            seed: int | None = None, ranks: Ranks = Ranks()) -> DataLoader:
    """Batches of ``split`` (this rank's share of them), shuffled per epoch when ``seed`` is given; workers
    persist across epochs."""
    return DataLoader(_Batches(source, split), sampler=_EpochBatches(source, split, batch_size, seed, ranks),
                      batch_size=None, num_workers=workers, persistent_workers=workers > 0,
                      prefetch_factor=4 if workers else None,
                      multiprocessing_context="forkserver" if workers else None)


class Normalizer:
    """The normalization of ``imaging.normalize``, on the device: (x / 255 - mean) / std per channel."""

    def __init__(self, prep: Preprocessing, device: torch.device):
        self.mean = torch.tensor(prep.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(prep.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC → float32 NCHW (a channels_last view of the same memory)."""
        return self.unit(pixels.permute(0, 3, 1, 2).float() / 255)

    def unit(self, images: torch.Tensor) -> torch.Tensor:
        """float NCHW in [0, 1] → float32 NCHW."""
        return (images - self.mean) / self.std


def augment(images: torch.Tensor, cfg: AugmentSpec, generator: torch.Generator) -> torch.Tensor:
    """Random resized crop, shift and horizontal flip (one affine resampling), then colour jitter, on
    a float NCHW batch in [0, 1] (before normalization)."""
    n = images.shape[0]
    if cfg.random_resized_crop or cfg.random_shift or cfg.horizontal_flip:
        scale = torch.ones(n)
        if cfg.random_resized_crop:  # 70-100% of the area
            scale = torch.empty(n).uniform_(0.7, 1.0, generator=generator).sqrt()
        room = 1 - scale + 2 * cfg.random_shift
        tx = (torch.rand(n, generator=generator) * 2 - 1) * room
        ty = (torch.rand(n, generator=generator) * 2 - 1) * room
        flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if cfg.horizontal_flip else 1.0
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2] = scale * flip, tx
        theta[:, 1, 1], theta[:, 1, 2] = scale, ty
        grid = F.affine_grid(theta.to(images.device), list(images.shape), align_corners=False)
        images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if cfg.color_jitter:
        shape = (n, 1, 1, 1)
        brightness = torch.empty(shape).uniform_(0.8, 1.2, generator=generator).to(images.device)
        contrast = torch.empty(shape).uniform_(0.8, 1.2, generator=generator).to(images.device)
        images = images * brightness
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        images = (images - mean) * contrast + mean
        if images.shape[1] == 3:
            saturation = torch.empty(shape).uniform_(0.8, 1.2, generator=generator).to(images.device)
            gray = (images * torch.tensor([0.299, 0.587, 0.114], device=images.device).view(1, 3, 1, 1)).sum(
                1, keepdim=True)
            images = gray + (images - gray) * saturation
        images = images.clamp(0, 1)
    return images


def _autocast(device: torch.device, precision: str):
    if precision != "mixed":
        return nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)


def _optimizer(model: nn.Module, spec: TaskSpec) -> torch.optim.Optimizer:
    cfg = spec.training
    # BatchNorm and bias parameters get no weight decay, as is standard.
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.learning_rate, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.learning_rate)


def load_checkpoint_weights(model: nn.Module, path: Path) -> dict:
    """Fine-tuning: load every tensor of a state dict whose name and shape match; report the rest."""
    from components.errors import RelayError

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RelayError(f"model.checkpoint: {path} does not exist") from None
    except Exception as error:  # noqa: BLE001 - a wrong file type fails in many ways
        raise RelayError(f"model.checkpoint: {path} is not a PyTorch state dict ({type(error).__name__})") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    own = model.state_dict()
    loaded = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not loaded:
        raise RelayError(f"model.checkpoint: no tensor in {path} matches the {type(model).__name__} of this spec")
    model.load_state_dict(loaded, strict=False)
    return {"loaded": len(loaded), "skipped": sorted(set(own) - set(loaded))}


@torch.inference_mode()
def _evaluate(model: nn.Module, loader: DataLoader, normalize: Normalizer, device: torch.device,
              precision: str) -> tuple[float, float, np.ndarray, np.ndarray]:
    model.eval()
    total, losses, predictions, labels = 0, 0.0, [], []
    for pixels, target in loader:
        pixels, target = pixels.to(device), target.to(device)
        with _autocast(device, precision):
            logits = model(normalize(pixels)).float()
        losses += float(F.cross_entropy(logits, target, reduction="sum"))
        predictions.append(logits.argmax(1).cpu().numpy())
        labels.append(target.cpu().numpy())
        total += len(target)
    predicted, truth = np.concatenate(predictions), np.concatenate(labels)
    return float((predicted == truth).mean()), losses / max(total, 1), predicted, truth


class _Training:
    """What one training of ``spec`` runs on: its data, a fresh model (channels_last; wrapped in
    DistributedDataParallel on several ranks), optimizer, loss and grad scaler, one optimizer step and one
    epoch. ``train`` runs epochs of it; ``TrainingRounds`` times steps of it."""

    def __init__(self, spec: TaskSpec, data_dir: Path, ranks: Ranks = Ranks()):
        cfg = self.cfg = spec.training
        self.ranks = ranks
        torch.manual_seed(cfg.seed)
        self.device = torch.device("cuda", ranks.local) if torch.cuda.is_available() else torch.device("cpu")
        self.arch = Architecture.from_spec(spec)
        self.source, self.splits = open_run_data(data_dir, spec)
        self.normalize = Normalizer(self.source.prep, self.device)
        # channels_last: oneDNN's convolutions run ~40% faster on NHWC (measured here, bf16 and fp32).
        self.net = build_torch_model(self.arch).to(self.device, memory_format=torch.channels_last)
        self.fine_tune = (load_checkpoint_weights(self.net, Path(spec.model.checkpoint))
                          if spec.model.init == "checkpoint" else None)
        # DDP copies rank 0's weights to every rank here, and averages the gradients in backward(). BatchNorm
        # stays per rank: SyncBatchNorm refuses CPU tensors (torch 2.13, gloo), so each rank normalizes its share.
        devices = [ranks.local] if self.device.type == "cuda" else None
        self.model = DistributedDataParallel(self.net, device_ids=devices) if ranks.world > 1 else self.net
        self.optimizer = _optimizer(self.net, spec)
        weights = class_weights(self.splits["train"].labels, self.arch.num_classes, cfg.class_weights)
        self.loss_fn = nn.CrossEntropyLoss(weight=torch.from_numpy(weights).to(self.device),
                                           label_smoothing=cfg.label_smoothing)
        # GradScaler guards fp16 gradients against underflow; bf16 has fp32's range and needs none.
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=cfg.precision == "mixed" and self.device.type == "cuda")
        self.train_loader = _loader(self.source, self.splits["train"], cfg.batch_size, cfg.workers, cfg.seed, ranks)
        self.steps_per_epoch = len(self.train_loader.sampler)
        self.total_steps = self.steps_per_epoch * cfg.epochs

    def step(self, pixels: torch.Tensor, target: torch.Tensor, step: int,
             generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step (``step``: its index in the whole training, for the LR) on a uint8 NHWC batch;
        the loss and the logits."""
        cfg = self.cfg
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(cfg, step, self.total_steps, self.steps_per_epoch)
        pixels, target = pixels.to(self.device), target.to(self.device)
        if cfg.augment != AugmentSpec():
            images = self.normalize.unit(augment(pixels.permute(0, 3, 1, 2).float() / 255, cfg.augment, generator))
            images = images.contiguous(memory_format=torch.channels_last)
        else:
            images = self.normalize(pixels)
        self.optimizer.zero_grad(set_to_none=True)
        with _autocast(self.device, cfg.precision):
            logits = self.model(images)
            loss = self.loss_fn(logits.float(), target)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss, logits

    def epoch(self, epoch: int) -> tuple[dict[str, float], int]:
        """Train one epoch (0-based), this rank's share of it; the train loss and accuracy over all ranks, and
        the number of images all ranks trained on."""
        self.model.train()
        # Rank 0 draws what one process draws, so a 1-rank run repeats an undistributed one.
        generator = torch.Generator().manual_seed((self.cfg.seed * 100_003 + epoch) * self.ranks.world
                                                  + self.ranks.rank)
        self.train_loader.sampler.epoch = epoch
        loss_sum, correct, seen = 0.0, 0, 0
        for step, (pixels, target) in enumerate(self.train_loader):
            loss, logits = self.step(pixels, target, epoch * self.steps_per_epoch + step, generator)
            loss_sum += float(loss.detach()) * len(target)
            correct += int((logits.argmax(1).cpu() == target).sum())
            seen += len(target)
        loss_sum, correct, seen = self.ranks.summed(loss_sum, correct, seen)
        return {"train_loss": loss_sum / seen, "train_accuracy": correct / seen}, int(seen)


def _resume(run: _Training, checkpoints: Checkpoints):
    """The training state to go on from, on every rank: rank 0 reads its last checkpoint (or starts afresh)
    and hands it to the others, so ranks on machines that share no disk resume alike."""
    state, saved = None, None
    if run.ranks.main:
        state = checkpoints.resume()
        if state is not None:
            saved = torch.load(checkpoints.last(state), map_location="cpu", weights_only=True)
            state.resumed_from = state.epochs_done
        else:
            state = checkpoints.fresh()
    state, saved = run.ranks.decided((state, saved))
    if saved is not None:
        run.net.load_state_dict(saved["model"])
        run.optimizer.load_state_dict(saved["optimizer"])
        run.scaler.load_state_dict(saved["scaler"])
    return state


@main_script_hidden()  # the DataLoader's forkserver workers must not re-run an Airflow task's main script
def train(spec: TaskSpec, data_dir: Path, out_dir: Path, ranks: Ranks = Ranks()):
    """Train ``spec``'s model; write weights, architecture, preprocessing, metrics, dvclive logs and test
    reports to ``out_dir``. A training killed after an epoch resumes from its checkpoint.

    On several ranks (``components.train.torchrun``) every rank calls this; rank 0 alone evaluates, writes
    checkpoints and publishes, and returns the result (the others return None)."""
    from components.train import TrainResult

    cfg = spec.training
    run = _Training(spec, data_dir, ranks)
    model, device, normalize, source, splits = run.net, run.device, run.normalize, run.source, run.splits
    info = read_data_info(data_dir)

    checkpoints = Checkpoints(out_dir, spec, info["dataset_version"], ".pt")
    state = _resume(run, checkpoints)
    if not ranks.main:
        for epoch in range(state.epochs_done, cfg.epochs):
            run.epoch(epoch)
            if ranks.decided(None):
                break
        return None

    val_loader = _loader(source, splits["val"], 256)
    params = {"framework": "pytorch", "device": device.type, "model": spec.model.model_dump(),
              **cfg.model_dump(exclude={"augment"}), "augment": cfg.augment.model_dump()}
    started, loop_seconds, loop_images = time.perf_counter(), 0.0, 0
    with epoch_log(checkpoints.dir, f"train {spec.name} (pytorch {run.arch.name}, {cfg.precision})", cfg.epochs,
                   params, done=state.history) as log:
        log.skip(state.epochs_done)
        if note := precision_note(cfg.precision, device.type == "cuda"):
            log.note(note)
        for epoch in range(state.epochs_done, cfg.epochs):
            loop_started = time.perf_counter()
            metrics, seen = run.epoch(epoch)
            loop_seconds += time.perf_counter() - loop_started
            loop_images += seen
            val_accuracy, val_loss, _, _ = _evaluate(model, val_loader, normalize, device, cfg.precision)
            metrics = {**metrics, "val_loss": val_loss, "val_accuracy": val_accuracy}
            state.record(epoch, {**metrics, "elapsed_seconds": round(time.perf_counter() - started, 3)})
            with atomic_file(checkpoints.last(state), "wb") as handle:
                torch.save({"model": model.state_dict(), "optimizer": run.optimizer.state_dict(),
                            "scaler": run.scaler.state_dict()}, handle)
            log.epoch(epoch, metrics)
            checkpoints.save_state(state)
            if ranks.decided(state.should_stop(cfg.early_stopping_patience)):
                break
        seconds = time.perf_counter() - started
        model.load_state_dict(torch.load(checkpoints.best(state), map_location=device, weights_only=True)["model"])
        # fp32, as the gate and the exported model compute it
        test_accuracy, _, predicted, truth = _evaluate(model, _loader(source, splits["test"], 256), normalize,
                                                       device, "fp32")
        log.summary({"test/accuracy": test_accuracy, "val/best_accuracy": state.best_accuracy})

        with atomic_dir(out_dir) as tmp:
            torch.save(model.cpu().state_dict(), tmp / WEIGHTS)
            publish_common(tmp, spec, run.arch, source.prep, splits, state, log, (test_accuracy, truth, predicted),
                           seconds, run.fine_tune, {
                               "framework": "pytorch", "device": device.type,
                               "distributed": {"processes": ranks.world, "backend": cfg.distributed.backend}
                               if ranks.world > 1 else None,
                               "train_loop_images_per_second": loop_images / loop_seconds if loop_seconds else None,
                               "parameters": sum(p.numel() for p in model.parameters())})
    checkpoints.remove()
    return TrainResult(out_dir, "pytorch", test_accuracy, seconds)


class TrainingRounds:
    """``spec``'s training steps, on its own input pipeline and precision, in rounds of a given number of
    batches: what the bake-off times for images/s. A fresh model; the weights are thrown away."""

    def __init__(self, spec: TaskSpec, data_dir: Path):
        self._run = _Training(spec, data_dir)
        self._run.model.train()
        self._batches = self._endless()
        self._step = 0

    def _endless(self):
        epoch = 0
        while True:
            self._run.train_loader.sampler.epoch = epoch
            generator = torch.Generator().manual_seed(self._run.cfg.seed * 100_003 + epoch)
            for pixels, target in self._run.train_loader:
                yield pixels, target, generator
            epoch += 1

    @main_script_hidden()
    def run(self, batches: int) -> int:
        """Train ``batches`` batches; the number of images they held."""
        images = 0
        for _ in range(batches):
            pixels, target, generator = next(self._batches)
            self._run.step(pixels, target, self._step % self._run.total_steps, generator)
            self._step += 1
            images += len(target)
        return images


def load_model(model_dir: Path) -> nn.Module:
    """Rebuild the trained model on the CPU in eval mode."""
    model = build_torch_model(Architecture.load(model_dir))
    model.load_state_dict(torch.load(model_dir / WEIGHTS, map_location="cpu", weights_only=True))
    return model.eval()


def load_predictor(model_dir: Path):
    """The eager model as a numpy predictor (inference mode, fp32)."""
    model = load_model(model_dir)

    @torch.inference_mode()
    def predict(images: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(images)).numpy()

    return predict
