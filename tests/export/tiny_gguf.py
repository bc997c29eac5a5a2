"""A tiny Llama model written as a GGUF file in code, the way llama.cpp's convert_hf_to_gguf.py
lays one out (llama.* keys, a gpt2-style byte-level tokenizer, attn_q/attn_k rows permuted for
llama.cpp's rope), so that transformers loads it back as the same model: a GGUF base for the
export and llama.cpp tests without a download; and a run on such a base with a masked adapter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFWriter, TokenType
from gguf.quants import quantize

from aglora.config import LoraConfig, ModelConfig, RunConfig, dump_config
from aglora.model.adapter import attach_lora, save_adapter
from aglora.model.load import load_model
from aglora.model.neurons import NeuronMask
from tests.tiny import make_model, make_tokenizer

_LAYER = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
          "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
          "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
          "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf's LlamaModel.permute: HF rotary halves -> llama.cpp's interleaving."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def gguf_name(hf_name: str) -> str:
    """GGUF tensor name of an HF Llama parameter."""
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    if hf_name == "lm_head.weight":
        return "output.weight"
    _, _, layer, rest = hf_name.split(".", 3)
    return f"blk.{layer}.{_LAYER[rest.removesuffix('.weight')]}.weight"


def gguf_tensors(model) -> dict[str, np.ndarray]:
    """The model's weights in GGUF names and layout (float32), q/k permuted."""
    cfg = model.config
    out = {}
    for name, p in model.state_dict().items():
        w = p.detach().float().cpu().numpy()
        if name.endswith("q_proj.weight"):
            w = permute(w, cfg.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            w = permute(w, cfg.num_key_value_heads)
        out[gguf_name(name)] = w
    return out


def _tokenizer(writer: GGUFWriter, tok) -> None:
    import json
    state = json.loads(tok.backend_tokenizer.to_str())
    vocab = state["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.get)
    special = {t.content for t in tok.backend_tokenizer.get_added_tokens_decoder().values()}
    merges = [m if isinstance(m, str) else " ".join(m) for m in state["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([TokenType.CONTROL if t in special else TokenType.NORMAL
                            for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tok.bos_token_id)
    writer.add_eos_token_id(tok.eos_token_id)
    writer.add_pad_token_id(tok.pad_token_id)
    writer.add_add_bos_token(False)
    writer.add_chat_template(tok.chat_template)


def write_tiny_gguf(model, tok, path: Path,
                    qtype: GGMLQuantizationType = GGMLQuantizationType.F32) -> Path:
    """`model` (a tiny LlamaForCausalLM) and `tok` as a GGUF file: 2D weights in `qtype`
    (F32: exact), norms in F32."""
    cfg = model.config
    writer = GGUFWriter(str(path), "llama")
    writer.add_type("model")
    writer.add_name("tiny")
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]
                                    if getattr(cfg, "rope_parameters", None) else cfg.rope_theta))
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(0 if qtype == GGMLQuantizationType.F32 else 7)
    _tokenizer(writer, tok)
    for name, w in gguf_tensors(model).items():
        if w.ndim == 1 or qtype == GGMLQuantizationType.F32:
            writer.add_tensor(name, w.astype(np.float32))
        else:
            writer.add_tensor(name, quantize(w, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


D_FF = 64  # rows of down_proj divide into 32-wide quantization blocks
MODULES = ("down_proj", "gate_proj", "up_proj")


def tiny_gguf(path: Path, seed: int = 0, d_ff: int = D_FF, layers: int = 3,
              qtype=GGMLQuantizationType.F32) -> Path:
    """make_model(seed, d_ff, layers) and the tiny tokenizer as a GGUF file."""
    return write_tiny_gguf(make_model(seed=seed, d_ff=d_ff, layers=layers), make_tokenizer(),
                           path, qtype)


def load_gguf_model(path: Path):
    """The GGUF file loaded as aglora loads a model (transformers, dequantized)."""
    return load_model(ModelConfig(name_or_path=str(path), device="cpu"))[0]


def make_gguf_run(run_dir: Path, base: Path, modules=MODULES, rank: int = 4):
    """A run on a GGUF base whose masked adapter (layers 0 and 2) has non-zero factors;
    returns (run_dir, the adapted model)."""
    run_dir.mkdir(parents=True)
    cfg = RunConfig(name="tiny", model=ModelConfig(name_or_path=str(base), device="cpu"),
                    lora=LoraConfig(modules=list(modules), rank=rank))
    (run_dir / "config.yaml").write_text(dump_config(cfg))
    mask = NeuronMask(torch.zeros(3, D_FF), [0, 1, 2])
    mask.mask[0, [1, 7, 30, 63]] = 1
    mask.mask[2, [0, 40]] = 1
    torch.manual_seed(0)
    pm = attach_lora(load_gguf_model(base), mask, cfg.lora)
    for name, p in pm.named_parameters():
        if "lora_B" in name:  # non-zero, as after training
            torch.nn.init.normal_(p, std=0.2)
    pm.eval()
    save_adapter(pm, run_dir / "adapter", {"concept": "tiny"})
    return run_dir, pm
