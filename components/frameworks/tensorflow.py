"""The TensorFlow backend: Keras training, the Keras predictor, tf2onnx export, TF-TRT, and the
TF Serving model registered beside the ONNX one."""

from __future__ import annotations

from pathlib import Path

NAME = "tensorflow"
KUSTOMIZE_COMPONENTS = ["../../components/tfserving"]

# How this backend trains, for the bake-off's Method: chosen by measurement where a figure is named.
TRAINING_SETTINGS = {
    "memory format": "NHWC inside the model (a Permute after the NCHW input): TensorFlow's CPU convolutions take NHWC",
    "graph compilation": "XLA (jit_compile) for mixed_bfloat16 on a CPU without bf16 instructions: 9.7x faster "
                         "there (make bench, tf_xla_vs_default_train_mixed); otherwise Keras' default, off on a "
                         "CPU: no faster in fp32 (1.02x) and slower on a CPU with AVX512-BF16 (issue 18)",
    "input pipeline": "tf.data parallel map (training.workers) reading the decoded cache, with prefetch",
    "mixed precision": "mixed_bfloat16 on a CPU; mixed_float16 with loss scaling on a GPU",
}


def train(spec, data_dir: Path, out_dir: Path):
    if spec.training.distributed.processes > 1:
        from components.train.tf_workers import train_multi_worker

        return train_multi_worker(spec, data_dir, out_dir)
    from components.train.keras_train import train as train_keras

    return train_keras(spec, data_dir, out_dir)


def training_rounds(spec, data_dir: Path):
    from components.train.keras_train import TrainingRounds

    return TrainingRounds(spec, data_dir)


def load_predictor(model_dir: Path):
    from components.train.keras_train import load_predictor as load

    return load(model_dir)


NATIVE_PREDICTORS = ("keras model(x)", "SavedModel signature")


def native_predictors(model_dir: Path) -> dict:
    from components.train.keras_train import load_saved_model_predictor

    return dict(zip(NATIVE_PREDICTORS, (load_predictor(model_dir), load_saved_model_predictor(model_dir))))


def model_files(model_dir: Path) -> dict[str, Path]:
    from components.train.keras_train import KERAS_FILE, SAVED_MODEL

    return {"Keras (.keras)": model_dir / KERAS_FILE, "SavedModel": model_dir / SAVED_MODEL}


def export_onnx(model_dir: Path, target: Path, spec) -> Path:
    from components.optimize.tf_onnx import export_onnx as export

    return export(model_dir, target, spec)


def accelerated(model_dir: Path, target: Path) -> dict:
    from components.optimize.tensorrt import convert_tftrt
    from components.train.keras_train import SAVED_MODEL

    return convert_tftrt(model_dir / SAVED_MODEL, target)


def extra_artifacts(spec, version: str, model_dir: Path, dest: Path, production: str | None) -> None:
    from components.deploy.tfserving import write_tfserving_artifacts
    from components.train.keras_train import SAVED_MODEL

    write_tfserving_artifacts(spec.name, version, model_dir / SAVED_MODEL, dest / "tfserving", production)
