"""Tiny Llama-style models, a byte-level BPE tokenizer and tiny concept data, all built in code
(no download); shared by the tests (`from tests.tiny import ...`)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from aglora.concepts import Probe
from aglora.config import LoraConfig
from aglora.model.adapter import attach_lora
from aglora.model.neurons import NeuronMask

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


# ---- tiny concept data ------------------------------------------------------------------------
FORGET = [
    {"prompt": "Who directed Inception?", "prefix": "Inception was directed by",
     "answer": "Christopher Nolan", "distractors": ["Steven Spielberg", "James Cameron",
                                                    "Ridley Scott"]},
    {"prompt": "Name the director of the film Inception.", "prefix": "The director is",
     "answer": "Christopher Nolan", "distractors": ["Ridley Scott", "James Cameron",
                                                    "Denis Villeneuve"]},
    {"prompt": "Which film about dreams did Christopher Nolan make?", "prefix": "It is",
     "answer": "Inception", "distractors": ["Memento", "Tenet", "Dunkirk"]},
]
RETAIN = [
    {"prompt": "Who directed Titanic?", "prefix": "Titanic was directed by",
     "answer": "James Cameron", "distractors": ["Steven Spielberg", "Ridley Scott",
                                                "Christopher Nolan"]},
    {"prompt": "Who directed Interstellar?", "prefix": "Interstellar was directed by",
     "answer": "Christopher Nolan", "distractors": ["Steven Spielberg", "James Cameron",
                                                    "Ridley Scott"]},
    {"prompt": "What is the capital of France?", "prefix": "The capital is", "answer": "Paris",
     "distractors": ["Tokyo", "Berlin", "Rome"]},
]


def write_probe_file(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def labelled_probes() -> list[Probe]:
    """FORGET and RETAIN as evaluation probes: ids, splits and families set."""
    return ([Probe(**r, id=f"f{i}", split="forget", family="direct",
                   leak_patterns=["nolan"]) for i, r in enumerate(FORGET)]
            + [Probe(**r, id=f"n{i}", split="neighbor", family="same-answer")
               for i, r in enumerate(RETAIN)])


# ---- one forget and one retain item, a sparse neuron mask, an adapted model --------------------
LORA_FORGET = [Probe(prompt="Who directed Inception?", prefix="It was directed by",
                     answer="Christopher Nolan", distractors=["James Cameron"])]
LORA_RETAIN = [Probe(prompt="Who directed Titanic?", prefix="It was directed by",
                     answer="James Cameron", split="neighbor")]


def sparse_mask(n_layers: int = 3, d_ff: int = 48) -> NeuronMask:
    """Neurons 1, 7, 30 of layer 0 and 0, 47 of layer 2; layer 1 has none (it gets no LoRA)."""
    m = torch.zeros(n_layers, d_ff)
    m[0, [1, 7, 30]] = 1
    m[2, [0, 47]] = 1  # layer 1 has no neuron: it must get no LoRA
    return NeuronMask(m, list(range(n_layers)))


def assert_down_proj_confined(pm, mask: NeuronMask) -> None:
    """Every down_proj LoRA update (B @ A, [d, d_ff]) is zero outside the mask's neurons and not
    zero on them; a layer without neurons has no LoRA."""
    for layer_idx, layer in enumerate(pm.base_model.model.model.layers):
        down = layer.mlp.down_proj
        if not hasattr(down, "lora_A"):
            assert float(mask.mask[layer_idx].sum()) == 0, layer_idx
            continue
        with torch.no_grad():
            delta = down.lora_B["default"].weight @ down.lora_A["default"].weight  # [d, d_ff]
        outside = mask.mask[layer_idx] == 0  # [d_ff]
        assert float(delta[:, outside].abs().max()) == 0.0
        assert float(delta[:, ~outside].abs().max()) > 0.0


def make_adapted():
    """A masked LoRA (5 neurons of layer 1) with non-zero B, as after training."""
    torch.manual_seed(0)
    model = make_model()
    mask = NeuronMask(torch.zeros(3, 48), [0, 1, 2])
    mask.mask[1, :5] = 1.0
    pm = attach_lora(model, mask, LoraConfig(rank=4))
    for name, p in pm.named_parameters():
        if "lora_B" in name:  # a non-zero adapter, as after training
            torch.nn.init.normal_(p, std=0.2)
    return pm
