"""Gate: the precision gate's verdict on an optimized model against the original and production."""
