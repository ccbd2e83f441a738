"""A hand-built GPT-NeoX model with a known circuit, for the circuit-discovery tests.

The zoo's tokenizer; 2 layers x 2 heads, d_model 48, every weight zero except:
- the embedding writes digit k (k < 16) to residual dimension k, and every token to dimension 47;
- head a1.h0, the planted successor head, attends to its own position (query and key biases on a
  rotary pair, so the score is c^2 cos(distance)) and maps digit k to residual dimension 16 + k + 1;
- head a1.h1, a copy head, does the same but to 16 + k, at 0.3 of the strength (it promotes the
  distractor: the circuit does not need it);
- the unembedding reads dimension 16 + k as digit k.
On the ``bare`` template ("3 4 5 6") the model answers 7 through a1.h0 alone. ``value_bias``: the
successor head's value bias on its value dimension 0, which it writes to digit 1's unembedding
(b_V W_O = value_bias on residual dimension 17), for checks that read b_V.
"""
from __future__ import annotations

import torch

SUCCESSOR, COPY = (1, 0), (1, 1)
D_MODEL, N_HEADS, N_DIGITS = 48, 2, 16


def digit_io(model, tok, emb, d_model: int, n_digits: int) -> None:
    """Every weight but the norms' zeroed; digit k's token embedded as dimension k (plus a constant
    in the last dimension) and read out from dimension 16 + k."""
    for name, p in model.named_parameters():
        if "norm" not in name:  # norms keep weight 1, bias 0
            p.zero_()
    ids = [tok.encode(f" {k}", add_special_tokens=False)[0] for k in range(n_digits)]
    emb[:, d_model - 1] = 1.0
    for k, i in enumerate(ids):
        emb[i, k] = 1.0
        model.lm_head.weight[i, 16 + k] = 1.0


def _set_head(attn, head: int, d_head: int, digit_out, scale: float, c: float = 12.0) -> None:
    w, b = attn.query_key_value.weight.data, attn.query_key_value.bias.data
    base = head * 3 * d_head                   # NeoX packs q, k, v per head
    b[base + 0] = c                            # query bias on rotary dim 0
    b[base + d_head + 0] = c                   # key bias on the same dim
    for k in range(N_DIGITS):
        w[base + 2 * d_head + k, k] = 1.0      # value dim k reads digit k
        out = digit_out(k)
        if out is not None:
            attn.dense.weight.data[16 + out, head * d_head + k] = scale


def successor_model(directory, value_bias: float = 0.0):
    """Build, save (``save_pretrained``) and load the planted model through ``load_model``."""
    from transformers import AutoTokenizer, GPTNeoXConfig, GPTNeoXForCausalLM

    from sae_core.models.loading import load_model
    from sae_core.models.zoo import zoo_dir

    tok = AutoTokenizer.from_pretrained(zoo_dir() / "tiny-b")
    cfg = GPTNeoXConfig(vocab_size=len(tok), hidden_size=D_MODEL, num_hidden_layers=2, num_attention_heads=N_HEADS,
                        intermediate_size=32, max_position_embeddings=64, rotary_pct=0.25, use_parallel_residual=True,
                        tie_word_embeddings=False, bos_token_id=0, eos_token_id=0, pad_token_id=1)
    model = GPTNeoXForCausalLM(cfg).eval()
    with torch.no_grad():
        digit_io(model, tok, model.gpt_neox.embed_in.weight, D_MODEL, N_DIGITS)
        d_head = D_MODEL // N_HEADS
        attn = model.gpt_neox.layers[1].attention
        _set_head(attn, SUCCESSOR[1], d_head, lambda k: k + 1 if k + 1 < N_DIGITS else None, 1.0)
        _set_head(attn, COPY[1], d_head, lambda k: k, 0.3)
        attn.query_key_value.bias.data[SUCCESSOR[1] * 3 * d_head + 2 * d_head] = value_bias
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return load_model(str(directory))


def random_sequential_model(directory, seed: int = 0):
    """A random 2-layer GPT-NeoX with a sequential residual (GPT-2's shape: a layer's MLP reads its
    heads' output), loaded through ``load_model``: for checks that do not need a competent model."""
    from transformers import AutoTokenizer, GPTNeoXConfig, GPTNeoXForCausalLM

    from sae_core.models.loading import load_model
    from sae_core.models.zoo import zoo_dir

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(zoo_dir() / "tiny-b")
    cfg = GPTNeoXConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, rotary_pct=0.25,
                        use_parallel_residual=False, tie_word_embeddings=False, bos_token_id=0, eos_token_id=0,
                        pad_token_id=1, initializer_range=0.3)
    model = GPTNeoXForCausalLM(cfg).eval()
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return load_model(str(directory))
