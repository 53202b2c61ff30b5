"""Data: fetch and scan images, the manifest and splits, `relay task new`, `relay data add`, built-in datasets."""
