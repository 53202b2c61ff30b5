"""Model definitions: one module per framework, both built from the same ``Architecture``."""
