"""``planted_circuit.successor_model`` in the Llama layout: RMSNorm, rotary, SwiGLU and grouped-query
attention, the successor and the copy head sharing one key/value head.

The zoo's tokenizer; 2 layers x 4 query heads sharing 2 key/value heads (d_head 16), d_model 64,
every weight zero except (norm weights stay 1):
- the embedding writes digit k (k < 16) to residual dimension k, and every token to dimension 63;
- layer 1's key/value head 0 is read by query heads 0 and 1: its key bias and their query biases
  sit on rotary dimension 0 (score c^2 cos(distance) / 4: each attends to its own position), its
  value dimension k reads digit k;
- head a1.h0, the successor head, writes value k to residual dimension 16 + k + 1; head a1.h1, a
  copy head, to 16 + k at 0.3 of the strength (it promotes the distractor);
- the unembedding reads dimension 16 + k as digit k.
On the ``bare`` template ("3 4 5 6") the model answers 7 through a1.h0 alone. The two heads read
one shared value: an edge into it must still be told apart per query head (it helps the task
through a1.h0 and hurts it through a1.h1).
"""
from __future__ import annotations

import torch

from tests.circuits.planted_circuit import digit_io

SUCCESSOR, COPY = (1, 0), (1, 1)
D_MODEL, N_HEADS, N_KV, D_HEAD, N_DIGITS = 64, 4, 2, 16, 16


def successor_llama(directory, c: float = 12.0):
    """Build, save (``save_pretrained``) and load the planted Llama through ``load_model``."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from sae_core.models.loading import load_model
    from sae_core.models.zoo import zoo_dir

    tok = AutoTokenizer.from_pretrained(zoo_dir() / "tiny-b")
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=D_MODEL, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=N_HEADS, num_key_value_heads=N_KV, head_dim=D_HEAD,
                      max_position_embeddings=64, attention_bias=True, tie_word_embeddings=False, rms_norm_eps=1e-6,
                      bos_token_id=0, eos_token_id=0, pad_token_id=1)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        digit_io(model, tok, model.model.embed_tokens.weight, D_MODEL, N_DIGITS)
        attn = model.model.layers[1].self_attn
        attn.k_proj.bias[0] = c                                 # key/value head 0, rotary dim 0
        for head, out, scale in [(SUCCESSOR[1], lambda k: k + 1, 1.0), (COPY[1], lambda k: k, 0.3)]:
            attn.q_proj.bias[head * D_HEAD] = c
            for k in range(N_DIGITS):
                attn.v_proj.weight[k, k] = 1.0                  # kv head 0's value dim k reads digit k
                if out(k) < N_DIGITS:
                    attn.o_proj.weight[16 + out(k), head * D_HEAD + k] = scale
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return load_model(str(directory))
