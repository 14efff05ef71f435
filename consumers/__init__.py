"""Processing: the shared stage runner, its state stores, and the dedup, correlation and routing stages."""
