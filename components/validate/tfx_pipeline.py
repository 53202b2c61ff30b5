"""TFX data validation: ExampleGen → StatisticsGen → SchemaGen (or the curated schema) → ExampleValidator,
on LocalDagRunner, plus drift against the previous dataset version.

This module runs in the TFX environment (.venv-tfx, Python 3.10), started as a subprocess by the
validate step (``components.validate.expectations.run_tfx_pipeline``), so it imports only the standard library,
TFX and TFDV. It writes ``tfx_report.json`` (anomalies and drift), ``statistics.pb``,
``schema.pbtxt`` (the one it used or inferred) and the pipeline's own outputs into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from pathlib import Path

STRING_FEATURES = ("label", "format")
INT_FEATURES = ("width", "height", "bytes")
# Per-channel mean intensity of the preprocessed image: channel_mean_0 for grey, 0-2 for RGB.
FLOAT_FEATURES = ("mean_intensity", "aspect_ratio", "channel_mean_0", "channel_mean_1", "channel_mean_2")
SPLITS = {"train": "train", "val": "eval", "test": "eval"}  # manifest split → TFX split name


def write_examples(manifest_csv: Path, root: Path) -> None:
    """Write the manifest's readable rows as tf.train.Example TFRecords, one folder per split."""
    import tensorflow as tf

    writers = {}
    for split in set(SPLITS.values()):
        (root / split).mkdir(parents=True, exist_ok=True)
        writers[split] = tf.io.TFRecordWriter(str(root / split / "data.tfrecord"))
    with open(manifest_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["readable"] != "True" or row["split"] not in SPLITS:
                continue  # unreadable files are GX's finding; they have no features to describe
            row["aspect_ratio"] = str(float(row["width"]) / float(row["height"]))
            feature = {name: tf.train.Feature(bytes_list=tf.train.BytesList(value=[row[name].encode()]))
                       for name in STRING_FEATURES}
            feature.update({name: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(float(row[name]))]))
                            for name in INT_FEATURES})
            # A grey image has no channel_mean_1 and _2: absent features, not zeros, so the schema says so.
            feature.update({name: tf.train.Feature(float_list=tf.train.FloatList(value=[float(row[name])]))
                            for name in FLOAT_FEATURES if row.get(name) not in (None, "")})
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writers[SPLITS[row["split"]]].write(example.SerializeToString())
    for writer in writers.values():
        writer.close()


def run_pipeline(examples: Path, schema_file: Path | None, work: Path) -> dict[str, Path]:
    """Run the TFX pipeline; return the paths of its statistics, schema and anomalies outputs."""
    from tfx import v1 as tfx

    example_gen = tfx.components.ImportExampleGen(
        input_base=str(examples),
        input_config=tfx.proto.Input(splits=[tfx.proto.Input.Split(name=name, pattern=f"{name}/*")
                                             for name in sorted(set(SPLITS.values()))]))
    statistics = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    if schema_file is not None:
        schema = tfx.components.ImportSchemaGen(schema_file=str(schema_file))
    else:
        schema = tfx.components.SchemaGen(statistics=statistics.outputs["statistics"], infer_feature_shape=False)
    validator = tfx.components.ExampleValidator(statistics=statistics.outputs["statistics"],
                                                schema=schema.outputs["schema"])
    pipeline = tfx.dsl.Pipeline(
        pipeline_name="relay_data_validation", pipeline_root=str(work / "pipeline"),
        components=[example_gen, statistics, schema, validator], enable_cache=False,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            str(work / "metadata.sqlite")))
    tfx.orchestration.LocalDagRunner().run(pipeline)

    def output(component: str, name: str) -> Path:
        (path,) = (work / "pipeline" / component / name).iterdir()  # one run per work dir
        return path

    return {"statistics": output("StatisticsGen", "statistics"), "schema": output(schema.id, "schema"),
            "anomalies": output("ExampleValidator", "anomalies")}


def _anomaly_lines(anomalies) -> list[str]:
    lines = []
    for feature, info in sorted(anomalies.anomaly_info.items()):
        lines.append(f"{feature}: {info.short_description} ({info.description})")
    if anomalies.HasField("dataset_anomaly_info"):
        lines.append(f"dataset: {anomalies.dataset_anomaly_info.description}")
    return lines


def validate(manifest_csv: Path, out: Path, schema_file: Path | None, previous_stats: Path | None,
             label_linf: float, js_threshold: float) -> dict:
    """Validate the manifest's features; return the report (also written to out/tfx_report.json)."""
    import tensorflow_data_validation as tfdv
    from tensorflow_metadata.proto.v0 import anomalies_pb2, statistics_pb2

    work = out / "tfx"
    examples = work / "examples"
    write_examples(manifest_csv, examples)
    started = time.perf_counter()
    outputs = run_pipeline(examples, schema_file, work)
    pipeline_seconds = time.perf_counter() - started

    problems: list[str] = []
    for split in sorted(set(SPLITS.values())):
        anomalies = anomalies_pb2.Anomalies.FromString(
            (outputs["anomalies"] / f"Split-{split}" / "SchemaDiff.pb").read_bytes())
        problems += [f"{split} split: {line}" for line in _anomaly_lines(anomalies)]

    schema = tfdv.load_schema_text(str(next(outputs["schema"].glob("*.pbtxt"))))
    current = tfdv.load_stats_binary(str(outputs["statistics"] / "Split-train" / "FeatureStats.pb"))
    shutil.copy(outputs["statistics"] / "Split-train" / "FeatureStats.pb", out / "statistics.pb")
    tfdv.write_schema_text(schema, str(out / "schema.pbtxt"))

    drift: list[str] = []
    if previous_stats is not None:
        tfdv.get_feature(schema, "label").drift_comparator.infinity_norm.threshold = label_linf
        present = {feature.name for feature in schema.feature}
        for name in (n for n in INT_FEATURES + FLOAT_FEATURES if n in present):
            tfdv.get_feature(schema, name).drift_comparator.jensen_shannon_divergence.threshold = js_threshold
        previous = statistics_pb2.DatasetFeatureStatisticsList()
        previous.ParseFromString(previous_stats.read_bytes())
        drift_anomalies = tfdv.validate_statistics(current, schema, previous_statistics=previous)
        drift = [f"drift vs previous version: {line}" for line in _anomaly_lines(drift_anomalies)]

    report = {"success": not problems and not drift, "anomalies": problems, "drift": drift,
              "schema_source": str(schema_file) if schema_file else "inferred by SchemaGen (first run)",
              "drift_baseline": str(previous_stats) if previous_stats else None,
              "pipeline_seconds": pipeline_seconds, "label_linf_threshold": label_linf,
              "js_threshold": js_threshold}
    (out / "tfx_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--schema", type=Path, default=None)
    parser.add_argument("--previous-stats", type=Path, default=None)
    parser.add_argument("--label-linf", type=float, default=0.1)
    parser.add_argument("--js-threshold", type=float, default=0.1)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    report = validate(args.manifest, args.out, args.schema, args.previous_stats, args.label_linf,
                      args.js_threshold)
    print(json.dumps({"success": report["success"], "anomalies": len(report["anomalies"]),
                      "drift": len(report["drift"])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
