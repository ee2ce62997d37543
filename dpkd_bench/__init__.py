"""dpkd-bench: benchmark knowledge-distillation objectives for causal language models."""

__version__ = "0.1.0"
