"""TF-TRT (FP16) for TensorFlow models, where TensorFlow is built with TensorRT and a GPU is present.

PyPI's TensorFlow wheels link no TensorRT; NVIDIA's TensorFlow container (nvcr.io/nvidia/tensorflow)
does. Wherever it cannot run, the exact reason is returned and lands in the gate report as
``skipped: <reason>``; it never passes silently.
"""

from __future__ import annotations

from pathlib import Path


def convert_tftrt(saved_model: Path, target: Path) -> dict:
    """Convert ``saved_model`` to an FP16 TF-TRT SavedModel at ``target``; say what happened."""
    import tensorflow as tf

    build = tf.sysconfig.get_build_info()
    if not build.get("is_cuda_build"):
        return {"skipped": f"TensorFlow {tf.__version__} here is a CPU-only build (no CUDA, no TensorRT)"}
    if not tf.config.list_physical_devices("GPU"):
        return {"skipped": "no GPU is visible to TensorFlow"}
    try:
        from tensorflow.python.compiler.tensorrt import trt_convert as trt

        converter = trt.TrtGraphConverterV2(input_saved_model_dir=str(saved_model),
                                            precision_mode=trt.TrtPrecisionMode.FP16)
        converter.convert()
        converter.save(str(target))
    except Exception as error:  # TensorRT missing or incompatible: report it verbatim
        return {"skipped": f"{type(error).__name__}: {error}".splitlines()[0]}
    return {"converted": str(target), "precision": "FP16"}
