"""Per-layer metrics from eigenvalues and fits, and model-level aggregates."""
