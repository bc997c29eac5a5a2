"""aglora: activation-guided masked LoRA unlearning.

Make a causal language model forget one concept by training a LoRA adapter whose update is
confined to the MLP neurons that carry that concept, and prove it with a before/after report.
The stages are plain functions (see `aglora.pipeline`) and CLI subcommands (see `aglora.cli`).
"""

__version__ = "0.1.0"
