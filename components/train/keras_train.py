"""Keras 3 (TensorFlow) training with mixed precision: mixed_bfloat16 on CPU, mixed_float16 with
loss scaling on GPU. Same split, metrics and progress bar as the PyTorch path."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from components.atomic import atomic_dir, write_json
from components.data import load_split
from components.models.architecture import Architecture
from components.train.tracking import epoch_log
from pipelines.spec import TaskSpec

KERAS_FILE = "model.keras"
SAVED_MODEL = "saved_model"


def _policy(precision: str, gpu: bool) -> str:
    if precision != "mixed":
        return "float32"
    return "mixed_float16" if gpu else "mixed_bfloat16"


def _accuracy(model, images: np.ndarray, labels: np.ndarray) -> float:
    return float((np.asarray(model(images, training=False)).argmax(1) == labels).mean())


def train(spec: TaskSpec, data_dir: Path, out_dir: Path):
    """Train the Keras model; write it (.keras and SavedModel), architecture, metrics and dvclive logs."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    from components.models.keras_cnn import as_float32, build_keras_model
    from components.train import TrainResult

    cfg = spec.training
    keras.utils.set_random_seed(cfg.seed)
    gpu = bool(tf.config.list_physical_devices("GPU"))
    policy = _policy(cfg.precision, gpu)
    arch = Architecture.from_spec(spec)
    x_train, y_train, _ = load_split(data_dir, "train", spec.dataset.classes)
    x_test, y_test, _ = load_split(data_dir, "test", spec.dataset.classes)

    model = build_keras_model(arch, policy)
    # Under mixed_float16 Keras wraps the optimizer in a LossScaleOptimizer itself; bf16 needs no scaling.
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(cfg.seed)

    with atomic_dir(out_dir) as tmp:
        started = time.perf_counter()
        params = {"framework": "tensorflow", "precision": cfg.precision, "policy": policy,
                  "device": "gpu" if gpu else "cpu", **cfg.model_dump()}
        with epoch_log(tmp, f"train {spec.name} (tensorflow, {policy})", cfg.epochs, params) as log:
            for epoch in range(cfg.epochs):
                order = rng.permutation(len(x_train))
                history = model.fit(x_train[order], y_train[order], batch_size=cfg.batch_size, epochs=1,
                                    shuffle=False, verbose=0)
                log.epoch(epoch, float(history.history["loss"][-1]), _accuracy(model, x_train, y_train),
                          _accuracy(model, x_test, y_test))
        seconds = time.perf_counter() - started
        test_accuracy = _accuracy(model, x_test, y_test)
        model.save(tmp / KERAS_FILE)
        reload_diff = export_saved_model(as_float32(model, arch), tmp / SAVED_MODEL, x_test[:64])
        arch.save(tmp)
        write_json(tmp / "metrics.json", {
            "framework": "tensorflow", "device": "gpu" if gpu else "cpu", "precision": cfg.precision,
            "policy": policy, "epochs": cfg.epochs, "train_seconds": seconds,
            "samples_per_second": cfg.epochs * len(x_train) / seconds, "test_accuracy": test_accuracy,
            "train_images": len(x_train), "test_images": len(x_test), "saved_model_reload_max_abs_diff": reload_diff,
        })
    return TrainResult(out_dir, "tensorflow", test_accuracy, seconds)


def export_saved_model(model, target: Path, probe: np.ndarray) -> float:
    """Export ``model`` (float32) as a SavedModel whose ``serving_default`` signature takes ``image``;
    reload it and check it reproduces the model's outputs exactly. Returns the max absolute difference."""
    import tensorflow as tf

    model.export(str(target), format="tf_saved_model", verbose=False)
    serving = tf.saved_model.load(str(target)).signatures["serving_default"]
    reloaded = next(iter(serving(image=tf.constant(probe)).values())).numpy()
    diff = float(np.abs(reloaded - np.asarray(model(probe, training=False))).max())
    if diff != 0.0:
        raise RuntimeError(f"the SavedModel at {target} does not reproduce the model (max diff {diff})")
    return diff


def load_predictor(model_dir: Path):
    """The trained Keras model (under its training policy) as a numpy predictor."""
    import keras

    model = keras.models.load_model(model_dir / KERAS_FILE)

    def predict(images: np.ndarray) -> np.ndarray:
        return np.asarray(model(images, training=False), dtype=np.float32)

    return predict
