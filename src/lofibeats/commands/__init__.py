"""The commands: what `train.py`, `prepare.py`, `generate.py` and `eval.py` do.

A command joins library packages (data + models + generation + metrics + callbacks) into one
user-facing action; it is the only layer that imports across all of them. It sits above every
library package: nothing in `lofibeats` imports `lofibeats.commands` (tests/test_import_graph.py
checks). `inference` is what generate and evaluate share: loading a checkpoint for inference
and reading the inference config group (conf/inference, conf/sampling).
"""
