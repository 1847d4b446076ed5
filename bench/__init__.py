"""speechbench: an evaluation harness for generative speech models and sparse-attention LLMs.

The engine (this package) holds registries, run specs, the runner, the results store, audio I/O,
evaluator weights, metrics and statistics. It never imports systems/ or tasks/ by name: they are
found through entry points (see bench.registry).
"""

__version__ = "0.1.0"
