"""Validate: Great Expectations on the manifest and pixels, TFX data validation (in its own venv)."""
