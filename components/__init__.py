"""Relay's steps: one plain, typed function per step, shared by the CLI, Airflow, DVC and pods."""
