"""What Relay runs: task specs, the step graph, the CLI and the Airflow DAG factory."""
