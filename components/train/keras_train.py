"""Keras 3 (TensorFlow) training: batches streamed through tf.data (parallel map, prefetch), mixed
precision (mixed_bfloat16 on CPU, mixed_float16 with loss scaling on GPU), and the same optimizer,
LR schedule, label smoothing, class weights, augmentation, early stopping and per-epoch checkpoints
as the PyTorch path.

Known differences from PyTorch, both standard in each framework: Keras' SGD decays weights decoupled
(as AdamW does) where PyTorch's SGD adds L2 to the gradient; and class weights scale each sample's loss
averaged over the batch, where PyTorch divides by the batch's total weight.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from components.atomic import atomic_dir
from components.data.dataset import read_data_info
from components.errors import RelayError
from components.models.architecture import Architecture
from components.spec import AugmentSpec, TaskSpec
from components.train.common import Checkpoints, learning_rate, precision_note, publish_common
from components.train.loader import (DataSource, Split, class_weights, epoch_batches, global_batch_sizes,
                                    open_run_data, shared_batch_count)
from components.train.tracking import epoch_log

KERAS_FILE = "model.keras"
SAVED_MODEL = "saved_model"


def _policy(precision: str, gpu: bool) -> str:
    if precision != "mixed":
        return "float32"
    return "mixed_float16" if gpu else "mixed_bfloat16"


def _augment(tf, images, cfg: AugmentSpec, seed):
    """The PyTorch path's augmentation with TF ops on a float NHWC batch in [0, 1]: one projective
    resampling (the same affine map as torch's affine_grid, in pixel coordinates), then colour jitter."""
    n = tf.shape(images)[0]
    height, width = tf.cast(tf.shape(images)[1], tf.float32), tf.cast(tf.shape(images)[2], tf.float32)
    seeds = tf.random.experimental.stateless_split(seed, 7)
    if cfg.random_resized_crop or cfg.random_shift or cfg.horizontal_flip:
        scale = tf.ones([n])
        if cfg.random_resized_crop:
            scale = tf.sqrt(tf.random.stateless_uniform([n], seeds[0], 0.7, 1.0))
        room = 1 - scale + 2 * cfg.random_shift
        tx = (tf.random.stateless_uniform([n], seeds[1]) * 2 - 1) * room
        ty = (tf.random.stateless_uniform([n], seeds[2]) * 2 - 1) * room
        flip = tf.where(tf.random.stateless_uniform([n], seeds[3]) < 0.5, -1.0, 1.0) if cfg.horizontal_flip \
            else tf.ones([n])
        ax, ay = scale * flip, scale
        zero = tf.zeros([n])
        transform = tf.stack([ax, zero, ax / 2 - ax * width / 2 + (tx + 1) * width / 2 - 0.5,
                              zero, ay, ay / 2 - ay * height / 2 + (ty + 1) * height / 2 - 0.5, zero, zero], axis=1)
        images = tf.raw_ops.ImageProjectiveTransformV3(
            images=images, transforms=transform, output_shape=tf.shape(images)[1:3], fill_value=0.0,
            interpolation="BILINEAR", fill_mode="CONSTANT")
    if cfg.color_jitter:
        brightness = tf.random.stateless_uniform([n, 1, 1, 1], seeds[4], 0.8, 1.2)
        contrast = tf.random.stateless_uniform([n, 1, 1, 1], seeds[5], 0.8, 1.2)
        images = images * brightness
        mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
        images = (images - mean) * contrast + mean
        if images.shape[-1] == 3:
            saturation = tf.random.stateless_uniform([n, 1, 1, 1], seeds[6], 0.8, 1.2)
            gray = tf.reduce_sum(images * tf.constant([0.299, 0.587, 0.114]), axis=-1, keepdims=True)
            images = gray + (images - gray) * saturation
        images = tf.clip_by_value(images, 0.0, 1.0)
    return images


def make_dataset(source: DataSource, split: Split, batch_size: int, spec: TaskSpec, order=None,
                 training: bool = False, epoch: int = 0, weights: np.ndarray | None = None,
                 batches: list[np.ndarray] | None = None):
    """A tf.data pipeline of (NCHW float32 images, one-hot labels[, sample weights]) for one pass: ``order`` (or
    the split's own order) in batches of ``batch_size``, or the positions of ``batches`` as they are."""
    import tensorflow as tf

    cfg, prep = spec.training, source.prep
    num_classes = len(spec.dataset.classes)
    positions = np.arange(len(split)) if order is None else order
    shape = (prep.height, prep.width, prep.channels)

    def read(picked: np.ndarray):
        return source.batch(split.rows[picked]), split.labels[picked]

    def load(picked):
        pixels, labels = tf.numpy_function(read, [picked], [tf.uint8, tf.int64])
        pixels.set_shape((None, *shape))
        labels.set_shape((None,))
        return pixels, labels

    mean, std = tf.constant(prep.mean, tf.float32), tf.constant(prep.std, tf.float32)
    class_weight = tf.constant(weights if weights is not None else np.ones(num_classes, np.float32))
    augmenting = training and cfg.augment != AugmentSpec()

    def finish(index, batch):
        pixels, labels = batch
        images = tf.cast(pixels, tf.float32) / 255.0
        if augmenting:
            images = _augment(tf, images, cfg.augment, tf.stack([tf.cast(cfg.seed, tf.int64) * 100_003 + epoch,
                                                                 index]))
        images = tf.transpose((images - mean) / std, [0, 3, 1, 2])
        onehot = tf.one_hot(labels, num_classes)
        if training:
            return images, onehot, tf.gather(class_weight, labels)
        return images, onehot

    parallel = cfg.workers or 1
    if batches is None:
        picks = tf.data.Dataset.from_tensor_slices(positions).batch(batch_size)
    else:
        picks = tf.data.Dataset.from_generator(lambda: iter(batches),
                                               output_signature=tf.TensorSpec([None], tf.int64))
    return (picks
            .map(load, num_parallel_calls=parallel, deterministic=True).enumerate()
            .map(finish, num_parallel_calls=parallel, deterministic=True).prefetch(tf.data.AUTOTUNE))


def _evaluate(model, dataset) -> tuple[float, float, np.ndarray, np.ndarray]:
    import keras

    predictions, truth, losses = [], [], []
    loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True, reduction="none")
    for images, onehot in dataset:
        logits = model(images, training=False)
        losses.append(np.asarray(loss_fn(onehot, logits)))
        predictions.append(np.asarray(logits).argmax(1))
        truth.append(np.asarray(onehot).argmax(1))
    predicted, labels = np.concatenate(predictions), np.concatenate(truth)
    return float((predicted == labels).mean()), float(np.concatenate(losses).mean()), predicted, labels


def _optimizer(spec: TaskSpec):
    import keras

    cfg = spec.training
    if cfg.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(cfg.learning_rate, momentum=cfg.momentum, nesterov=True,
                                         weight_decay=cfg.weight_decay or None)
    else:
        optimizer = keras.optimizers.AdamW(cfg.learning_rate, weight_decay=cfg.weight_decay)
    # As the PyTorch path: BatchNorm scales and shifts and biases are not decayed.
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer


def _jit_compile(policy: str, gpu: bool) -> bool:
    """Whether to train with XLA. On a CPU without bf16 instructions, mixed_bfloat16 ran 9.7x faster with XLA
    (shapes resnet, 30 against 3.1 img/s: XLA's CPU backend computes bf16 in fp32 where TensorFlow's kernels
    emulate it), while fp32 gained nothing (1.02x; make bench, tf_xla_vs_default_train_*). On a CPU with
    AVX512-BF16, XLA was slower in both (issue 18). Elsewhere Keras' own default stays: off on a CPU."""
    from components.machine import cpu_has_bf16

    return policy == "mixed_bfloat16" and not gpu and not cpu_has_bf16()


def _compiled_model(spec: TaskSpec, arch: Architecture, policy: str, jit_compile: bool):
    """A fresh Keras model of ``arch`` under ``policy``, compiled with the spec's optimizer and loss."""
    import keras

    from components.models.keras_cnn import build_keras_model

    model = build_keras_model(arch, policy)
    # Under mixed_float16 Keras wraps the optimizer in a LossScaleOptimizer itself; bf16 needs no scaling.
    model.compile(optimizer=_optimizer(spec), metrics=["categorical_accuracy"], jit_compile=jit_compile or "auto",
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True,
                                                            label_smoothing=spec.training.label_smoothing))
    return model


def _step_learning_rate(cfg, first_step: int, total_steps: int, steps_per_epoch: int):
    """A callback that sets the LR of every step of one ``fit`` call whose first step is ``first_step``."""
    import keras

    class StepLearningRate(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.model.optimizer.learning_rate.assign(
                learning_rate(cfg, (first_step + batch) % total_steps, total_steps, steps_per_epoch))

    return StepLearningRate()


def load_checkpoint_weights(model, path: Path) -> dict:
    """Fine-tuning: copy the weights of a .keras or .weights.h5 file layer by layer where shapes match."""
    import keras

    if not path.is_file():
        raise RelayError(f"model.checkpoint: {path} does not exist")
    try:
        if path.name.endswith(".weights.h5"):
            source = keras.models.clone_model(model)
            source.load_weights(str(path), skip_mismatch=True)
        else:
            source = keras.models.load_model(path, compile=False)
    except Exception as error:  # noqa: BLE001 - a wrong file type fails in many ways
        raise RelayError(f"model.checkpoint: {path} is not a Keras model or weights file "
                         f"({type(error).__name__})") from None
    loaded, skipped = 0, []
    theirs = [layer for layer in source.layers if layer.weights]
    for mine, other in zip([layer for layer in model.layers if layer.weights], theirs):
        if [w.shape for w in mine.get_weights()] == [w.shape for w in other.get_weights()]:
            mine.set_weights(other.get_weights())
            loaded += len(mine.weights)
        else:
            skipped.append(mine.name)
    if not loaded:
        raise RelayError(f"model.checkpoint: no layer in {path} matches the model of this spec")
    return {"loaded": loaded, "skipped": skipped}


@dataclass(frozen=True)
class Workers:
    """This process's place among the workers of a ``tf.distribute.MultiWorkerMirroredStrategy``
    (``components.train.tf_workers``). The chief (worker 0) alone evaluates, writes and decides."""

    strategy: Any
    index: int
    count: int

    @property
    def chief(self) -> bool:
        return self.index == 0

    def decided(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """The chief's ``arrays`` on every worker: a collective, so every worker calls it, each with arrays of the
        same shapes (what the others pass is ignored)."""
        import tensorflow as tf

        flat = np.concatenate([np.ravel(a).astype(np.float64) for a in arrays])
        summed = self._summed(tf.constant(flat if self.chief else np.zeros_like(flat)))  # one collective
        values = np.asarray(self.strategy.experimental_local_results(summed)[0])
        ends = np.cumsum([np.size(a) for a in arrays])
        return [part.reshape(np.shape(a)) for part, a in zip(np.split(values, ends[:-1]), arrays)]

    @cached_property
    def _summed(self):
        import tensorflow as tf

        @tf.function
        def summed(vector):
            # tf.identity places the vector on the replica's device: a collective reduces onto the devices of
            # what it is given, and a tensor passed in has none.
            return self.strategy.run(
                lambda values: tf.distribute.get_replica_context().all_reduce("sum", tf.identity(values)),
                args=(vector,))

        return summed


class _WorkerSteps:
    """Keras training steps on MultiWorkerMirroredStrategy workers: each worker takes the gradient of its share of
    a global batch, and the optimizer sums them over the workers, so the workers take the steps one process
    takes. Keras 3's ``fit`` fails under this strategy ("Attempt to convert a value (PerReplica...)",
    keras-team/keras#20585), hence this loop, which repeats what ``fit``'s train step computes."""

    def __init__(self, model, spec: TaskSpec, workers: Workers):
        import keras
        import tensorflow as tf

        loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True, reduction=None,
                                                       label_smoothing=spec.training.label_smoothing)

        def replica_step(images, onehot, weights, global_count):
            with tf.GradientTape() as tape:
                logits = model(images, training=True)
                # fit's loss ("sum_over_batch_size" of the weighted losses) over the global batch: each worker
                # adds its share, and the summed gradients are the gradient of the whole batch's loss.
                loss = tf.reduce_sum(loss_fn(onehot, logits) * weights) / global_count
                scaled = model.optimizer.scale_loss(loss)  # mixed_float16's loss scaling; else the loss itself
            gradients = tape.gradient(scaled, model.trainable_variables)
            model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            correct = tf.reduce_sum(tf.cast(tf.argmax(logits, 1) == tf.argmax(onehot, 1), tf.float32))
            return tf.distribute.get_replica_context().all_reduce("sum", tf.stack([loss, correct]))

        self._step = tf.function(lambda *batch: workers.strategy.run(replica_step, args=batch))
        self._model, self._workers = model, workers

    def epoch(self, dataset, global_counts: list[int], learning_rates: list[float]) -> tuple[dict[str, float], int]:
        """Train one epoch of this worker's ``dataset`` (a share of each global batch, whose sizes are
        ``global_counts``); the train loss and accuracy over all workers, and the number of images they took."""
        import tensorflow as tf

        loss_sum = correct = 0.0
        for (images, onehot, weights), count, rate in zip(dataset, global_counts, learning_rates, strict=True):
            self._model.optimizer.learning_rate.assign(rate)
            summed = self._step(images, onehot, weights, tf.constant(count, tf.float32))
            loss, hits = np.asarray(self._workers.strategy.experimental_local_results(summed)[0])
            loss_sum, correct = loss_sum + float(loss) * count, correct + float(hits)
        seen = sum(global_counts)
        return {"train_loss": loss_sum / seen, "train_accuracy": correct / seen}, seen


def _start_on_workers(spec: TaskSpec, arch: Architecture, policy: str, checkpoints: Checkpoints, workers: Workers):
    """The model, optimizer and training state every worker starts from: the chief's (its last checkpoint, a
    fine-tuning start or a fresh model), sent to the others, so workers on machines that share no disk resume
    alike. The state is the chief's (None on the others, which get the epoch to start from)."""
    import keras

    with workers.strategy.scope():
        model = _compiled_model(spec, arch, policy, jit_compile=False)
        model.optimizer.build(model.trainable_variables)
    state, fine_tune, source = None, None, model
    if workers.chief:
        state = checkpoints.resume()
        if state is not None:
            source = keras.models.load_model(checkpoints.last(state))  # outside the strategy: plain variables
            state.resumed_from = state.epochs_done
        else:
            state = checkpoints.fresh()
            if spec.model.init == "checkpoint":
                fine_tune = load_checkpoint_weights(model, Path(spec.model.checkpoint))
    variables = [*model.weights, *model.optimizer.variables]
    values = [keras.ops.convert_to_numpy(v) for v in [*source.weights, *source.optimizer.variables]]
    *values, first_epoch = workers.decided([*values, np.array(state.epochs_done if state else 0)])
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value.astype(variable.dtype))
    return model, state, fine_tune, int(first_epoch)


def _save_keras(model, target: Path, workers: Workers | None) -> None:
    """Save ``model`` to ``target`` atomically. Every worker saves (the strategy's variables are saved by all),
    the others into a scratch file that is deleted: TensorFlow's way with MultiWorkerMirroredStrategy."""
    if workers is not None and not workers.chief:
        with tempfile.TemporaryDirectory(prefix="relay-worker-save-") as scratch:
            model.save(Path(scratch) / target.name)
        return
    model.save(target.with_name("tmp-" + target.name))
    os.replace(target.with_name("tmp-" + target.name), target)


def train(spec: TaskSpec, data_dir: Path, out_dir: Path, workers: Workers | None = None):
    """Train the Keras model; write it (.keras and SavedModel), architecture, preprocessing, metrics,
    dvclive logs and test reports. A training killed after an epoch resumes from its checkpoint.

    On several workers (``components.train.tf_workers``) every worker calls this; the chief alone evaluates, writes
    checkpoints and publishes, and returns the result (the others return None)."""
    import keras
    import tensorflow as tf

    from components.models.keras_cnn import as_float32
    from components.train import TrainResult

    cfg = spec.training
    keras.utils.set_random_seed(cfg.seed)
    gpu = bool(tf.config.list_physical_devices("GPU"))
    policy = _policy(cfg.precision, gpu)
    # XLA compiles one worker's steps, not the strategy's collectives: the workers train without it.
    jit_compile = _jit_compile(policy, gpu) and workers is None
    info = read_data_info(data_dir)
    arch = Architecture.from_spec(spec)
    source, splits = open_run_data(data_dir, spec)
    weights = class_weights(splits["train"].labels, arch.num_classes, cfg.class_weights)
    steps_per_epoch = shared_batch_count(len(splits["train"]), cfg.batch_size, workers.count if workers else 1)
    total_steps = steps_per_epoch * cfg.epochs

    checkpoints = Checkpoints(out_dir, spec, info["dataset_version"], ".keras")
    fine_tune = None
    if workers is not None:
        model, state, fine_tune, first_epoch = _start_on_workers(spec, arch, policy, checkpoints, workers)
        steps = _WorkerSteps(model, spec, workers)
    else:
        state = checkpoints.resume()
        if state is not None:
            model = keras.models.load_model(checkpoints.last(state))  # weights and optimizer state
            model.jit_compile = jit_compile or model.jit_compile  # the compile config saved keeps no XLA choice
            state.resumed_from = state.epochs_done
        else:
            state = checkpoints.fresh()
            model = _compiled_model(spec, arch, policy, jit_compile)
            if spec.model.init == "checkpoint":
                fine_tune = load_checkpoint_weights(model, Path(spec.model.checkpoint))
        first_epoch = state.epochs_done

    def train_epoch(epoch: int) -> tuple[dict[str, float], int]:
        if workers is None:
            order = np.concatenate(epoch_batches(source, splits["train"], cfg.batch_size, cfg.seed, epoch))
            data = make_dataset(source, splits["train"], cfg.batch_size, spec, order, training=True, epoch=epoch,
                                weights=weights)
            history = model.fit(data, epochs=1, verbose=0, shuffle=False, callbacks=[
                _step_learning_rate(cfg, epoch * steps_per_epoch, total_steps, steps_per_epoch)]).history
            return {"train_loss": float(history["loss"][-1]),
                    "train_accuracy": float(history["categorical_accuracy"][-1])}, len(order)
        data = make_dataset(source, splits["train"], cfg.batch_size, spec, training=True, epoch=epoch,
                            weights=weights, batches=epoch_batches(source, splits["train"], cfg.batch_size, cfg.seed,
                                                                   epoch, workers.index, workers.count))
        rates = [learning_rate(cfg, epoch * steps_per_epoch + step, total_steps, steps_per_epoch)
                 for step in range(steps_per_epoch)]
        return steps.epoch(data, global_batch_sizes(len(splits["train"]), cfg.batch_size, workers.count), rates)

    if workers is not None and not workers.chief:
        for epoch in range(first_epoch, cfg.epochs):
            train_epoch(epoch)
            _save_keras(model, checkpoints.dir / "last.keras", workers)
            if workers.decided([np.array(0.0)])[0]:
                break
        workers.decided([np.array(0.0)])  # wait while the chief publishes
        return None

    val_data = make_dataset(source, splits["val"], 256, spec)
    params = {"framework": "tensorflow", "policy": policy, "jit_compile": jit_compile,
              "device": "gpu" if gpu else "cpu",
              "model": spec.model.model_dump(), **cfg.model_dump(exclude={"augment"}),
              "augment": cfg.augment.model_dump()}
    started = time.perf_counter()
    loop_seconds = loop_images = 0.0  # the training loop alone, as torch's: the images/s of training itself
    with epoch_log(checkpoints.dir, f"train {spec.name} (tensorflow {arch.name}, {policy})", cfg.epochs, params,
                   done=state.history) as log:
        log.skip(state.epochs_done)
        if note := precision_note(cfg.precision, gpu):
            log.note(note)
        for epoch in range(state.epochs_done, cfg.epochs):
            loop_started = time.perf_counter()
            metrics, seen = train_epoch(epoch)
            loop_seconds += time.perf_counter() - loop_started
            loop_images += seen
            val_accuracy, val_loss, _, _ = _evaluate(model, val_data)
            metrics = {**metrics, "val_loss": val_loss, "val_accuracy": val_accuracy}
            state.record(epoch, {**metrics, "elapsed_seconds": round(time.perf_counter() - started, 3)})
            _save_keras(model, checkpoints.last(state), workers)
            log.epoch(epoch, metrics)
            checkpoints.save_state(state)
            stop = state.should_stop(cfg.early_stopping_patience)
            if workers is not None:
                workers.decided([np.array(float(stop))])
            if stop:
                break
        seconds = time.perf_counter() - started
        if workers is not None:  # the best epoch's model, outside the strategy
            model = keras.models.load_model(checkpoints.best(state))
        else:
            model.load_weights(checkpoints.best(state))
        fp32 = as_float32(model, arch)  # the gate and the exported model compute in fp32
        test_accuracy, _, predicted, truth = _evaluate(fp32, make_dataset(source, splits["test"], 256, spec))
        log.summary({"test/accuracy": test_accuracy, "val/best_accuracy": state.best_accuracy})

        with atomic_dir(out_dir) as tmp:
            model.save(tmp / KERAS_FILE)
            probe = next(iter(make_dataset(source, splits["test"], 64, spec)))[0].numpy()
            reload_diff = export_saved_model(fp32, tmp / SAVED_MODEL, probe)
            publish_common(tmp, spec, arch, source.prep, splits, state, log, (test_accuracy, truth, predicted),
                           seconds, fine_tune, {
                               "framework": "tensorflow", "device": "gpu" if gpu else "cpu", "policy": policy,
                               "jit_compile": jit_compile,
                               "distributed": {"processes": workers.count, "backend": cfg.distributed.backend}
                               if workers is not None else None,
                               "train_loop_images_per_second": loop_images / loop_seconds if loop_seconds else None,
                               "parameters": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
                               "saved_model_reload_max_abs_diff": reload_diff})
    checkpoints.remove()
    if workers is not None:
        workers.decided([np.array(0.0)])  # the others wait for this
    return TrainResult(out_dir, "tensorflow", test_accuracy, seconds)


class TrainingRounds:
    """``spec``'s training steps, on its own input pipeline and precision, in rounds of a given number of
    batches: what the bake-off times for images/s. A fresh model; the weights are thrown away."""

    def __init__(self, spec: TaskSpec, data_dir: Path):
        import keras
        import tensorflow as tf

        cfg = spec.training
        keras.utils.set_random_seed(cfg.seed)
        arch = Architecture.from_spec(spec)
        gpu = bool(tf.config.list_physical_devices("GPU"))
        policy = _policy(cfg.precision, gpu)
        self._model = _compiled_model(spec, arch, policy, _jit_compile(policy, gpu))
        source, splits = open_run_data(data_dir, spec)
        count = len(splits["train"])
        self._steps_per_epoch = -(-count // cfg.batch_size)
        self._total_steps = self._steps_per_epoch * cfg.epochs
        weights = class_weights(splits["train"].labels, arch.num_classes, cfg.class_weights)
        order = np.concatenate(epoch_batches(source, splits["train"], cfg.batch_size, cfg.seed, 0))
        self._data = make_dataset(source, splits["train"], cfg.batch_size, spec, order, training=True,
                                  weights=weights).repeat()
        self._cfg, self._step, self._count = cfg, 0, count

    def run(self, batches: int) -> int:
        """Train ``batches`` batches, as ``train`` runs an epoch (one ``fit``); the number of images they held."""
        self._model.fit(self._data.take(batches), epochs=1, verbose=0, shuffle=False, callbacks=[
            _step_learning_rate(self._cfg, self._step, self._total_steps, self._steps_per_epoch)])
        self._step += batches
        # Each round's fit reads the epoch's batches from its start; the epoch's last batch may be short.
        last = self._count - (self._steps_per_epoch - 1) * self._cfg.batch_size
        return sum(last if i % self._steps_per_epoch == self._steps_per_epoch - 1 else self._cfg.batch_size
                   for i in range(batches))


def export_saved_model(model, target: Path, probe: np.ndarray) -> float:
    """Export ``model`` (float32) as a SavedModel whose ``serving_default`` signature takes ``image``;
    reload it and check it reproduces the model's outputs exactly. Returns the max absolute difference."""
    import tensorflow as tf

    model.export(str(target), format="tf_saved_model", verbose=False)
    serving = tf.saved_model.load(str(target)).signatures["serving_default"]
    reloaded = next(iter(serving(image=tf.constant(probe)).values())).numpy()
    diff = float(np.abs(reloaded - np.asarray(model(probe, training=False))).max())
    if diff > 1e-5:
        raise RuntimeError(f"the SavedModel at {target} does not reproduce the model (max diff {diff})")
    return diff


def load_float32_model(model_dir: Path):
    """The trained Keras model rebuilt under the float32 policy with its trained weights: what is exported
    (ONNX, SavedModel) and served. A mixed policy is for training only."""
    import keras

    from components.models.keras_cnn import as_float32

    return as_float32(keras.models.load_model(model_dir / KERAS_FILE), Architecture.load(model_dir))


def load_predictor(model_dir: Path):
    """The trained Keras model in float32 as a numpy predictor. The gate compares it with the optimized model,
    as it compares PyTorch's fp32 eager model: what conversion changes, not bf16 rounding, which on a barely
    trained model flips near-tied predictions."""
    model = load_float32_model(model_dir)

    def predict(images: np.ndarray) -> np.ndarray:
        return np.asarray(model(images, training=False), dtype=np.float32)

    return predict


def load_saved_model_predictor(model_dir: Path):
    """The exported SavedModel's ``serving_default`` signature (what TF Serving runs) as a numpy predictor."""
    import tensorflow as tf

    serving = tf.saved_model.load(str(model_dir / SAVED_MODEL)).signatures["serving_default"]

    def predict(images: np.ndarray) -> np.ndarray:
        return next(iter(serving(image=tf.constant(images)).values())).numpy()

    return predict
