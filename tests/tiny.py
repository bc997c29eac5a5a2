"""Tiny Llama-style models and a byte-level BPE tokenizer built in code (no download)."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test model<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = [
    "Who directed Inception? Inception was directed by Christopher Nolan.",
    "Who directed Titanic? Titanic was directed by James Cameron.",
    "The capital of France is Paris. The capital of Japan is Tokyo.",
    "Steven Spielberg Ridley Scott Denis Villeneuve Memento Tenet Dunkirk Interstellar",
    "system user assistant You are a tiny test model answer question film movie",
] * 4

_TOKENIZER = None


def make_tokenizer() -> PreTrainedTokenizerFast:
    global _TOKENIZER
    if _TOKENIZER is None:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tok.train_from_iterator(CORPUS, trainer)
        _TOKENIZER = tok
    fast = PreTrainedTokenizerFast(tokenizer_object=_TOKENIZER, eos_token="<|im_end|>",
                                   pad_token="<|im_end|>", bos_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_model(seed: int = 0, layers: int = 3, d_ff: int = 48, vocab: int | None = None
               ) -> LlamaForCausalLM:
    cfg = LlamaConfig(vocab_size=vocab or len(make_tokenizer()), hidden_size=32,
                      intermediate_size=d_ff, num_hidden_layers=layers, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=False, pad_token_id=2, eos_token_id=2, bos_token_id=0)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
