"""Export every model to fast runtimes and time batched inference (pytest-benchmark)."""
