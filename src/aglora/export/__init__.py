"""`aglora export`: a run's adapter, written where it is served.

Four formats: `peft` copies the run's adapter (`adapter/`: adapter_config.json,
adapter_model.safetensors, aglora.json) after checking that it is plain peft LoRA — LoRA factors
only, one rank, its target modules listed, finite weights, safetensors only (`validate`); with
`--check vllm` also against the rules vLLM's LoRA loader applies (`vllm`). `merged` folds the
adapter into the run's base model and writes a full safetensors model directory with its
tokenizer, which `transformers.AutoModelForCausalLM.from_pretrained` loads with no aglora code
(`write`). `gguf-lora` writes the adapter as a llama.cpp LoRA GGUF, and `gguf` the base GGUF with
the adapter merged into its tensors, quantized with the gguf package (`gguf`). Every export
records the base model's fingerprint and the run (`aglora-export.json`, or a GGUF's
`aglora.export` key), and an adapter made for another base than the run's (or the given base
GGUF) is refused. Everything that needs no model is checked before the model loads; exports are
written atomically.
"""
