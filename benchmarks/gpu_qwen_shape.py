"""step_speed.py's measurements on a Qwen2.5-3B-shaped model with random weights (GPU, bf16).

    PYTHONPATH=src python benchmarks/gpu_qwen_shape.py            # CUDA, bf16
    PYTHONPATH=src python benchmarks/gpu_qwen_shape.py --tiny     # CPU smoke test, scaled down

No hub is reachable on the GPU machine, so the model is built from its configuration (values of
Qwen/Qwen2.5-3B-Instruct's config.json, written out below) with random weights, and the tokenizer
is a byte-level BPE trained in code on the concept's own texts. Random weights know no concept,
so the numbers are costs, not unlearning results: the shapes (36 layers, d_ff 11008, a 151,936
vocabulary) are what sets the cost of a step, of recording, and of evaluation.
"""

from __future__ import annotations

import argparse
import time

import torch
from step_speed import machine_line, measure, print_table

from aglora.concepts import load_concept

# Qwen/Qwen2.5-3B-Instruct config.json
QWEN25_3B = dict(
    hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
    num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768,
    rope_theta=1_000_000.0, rms_norm_eps=1e-6, hidden_act="silu", tie_word_embeddings=True,
    attention_dropout=0.0, use_sliding_window=False,
)
# --tiny: the same architecture scaled down to run on a CPU in seconds.
TINY = dict(QWEN25_3B, hidden_size=64, intermediate_size=176, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, vocab_size=2048)

CHAT_TEMPLATE = (  # Qwen2.5's chat markup, reduced to user/assistant turns
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def make_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE trained on `texts` (no download), with Qwen's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(shape: dict, dtype: torch.dtype, device: torch.device):
    from transformers import Qwen2Config, Qwen2ForCausalLM
    cfg = Qwen2Config(**shape, pad_token_id=0, bos_token_id=0, eos_token_id=2)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg).to(dtype)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="scaled-down model on CPU, float32")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--k", type=int, default=256, help="neurons in the mask")
    parser.add_argument("--gen-tokens", type=int, default=32)
    args = parser.parse_args()
    if args.tiny:
        shape, dtype, device = TINY, torch.float32, torch.device("cpu")
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run with --tiny for the CPU smoke test")
        shape, dtype, device = QWEN25_3B, torch.bfloat16, torch.device("cuda")
    start = time.time()
    concept = load_concept("builtin:inception")
    probes = concept.eval_probes()
    texts = [" ".join([p.prompt, p.prefix, p.answer or "", *p.distractors])
             for p in [*concept.forget, *concept.retain, *probes]]
    tok = make_tokenizer(texts, min(4096, shape["vocab_size"]))
    model = build_model(shape, dtype, device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"[speed] built a Qwen2.5-3B-shaped model ({n_params / 1e9:.2f} B parameters"
          f"{', scaled down' if args.tiny else ''}) in {time.time() - start:.1f}s")
    rows = measure(model, tok, concept.forget, concept.retain, probes, args.steps, args.batch,
                   args.rank, args.k, args.gen_tokens)
    label = "tiny Qwen2-shaped (CPU smoke test)" if args.tiny else "Qwen2.5-3B-shaped, random"
    print_table(rows, f"{label}, {str(dtype).replace('torch.', '')}, {machine_line(device)}; "
                      f"total {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
