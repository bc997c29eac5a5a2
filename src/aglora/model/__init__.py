"""Composable model parts, knowing nothing of the stages that use them.

`load` (a model and tokenizer from the embedded model, a GGUF file or a directory), `neurons`
(the gated MLP layers, neuron masks, and the hooks that observe them), `identity` (fingerprints
and weight digests), `adapter` (masked LoRA: attach, fold, save, load), `tokens` (probes to token
batches through the chat template), `forward` (logits only where needed), `prefill` (shared
prompt prefixes run once), `decode` (seeded generation) and `likelihood` (likelihood choice).
"""
