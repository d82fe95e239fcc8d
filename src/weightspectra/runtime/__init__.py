"""Running an analysis on one machine: parallel workers with a BLAS thread budget, and the
content-keyed result cache that makes interrupted runs resumable."""
