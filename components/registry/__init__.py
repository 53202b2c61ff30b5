"""Registry: model versions in git and DVC, registered with GTO."""
