"""Published shapes of released models, as keyword arguments of their config classes: the sizes without
the weights, for cards on the meta device, memory figures and benchmarks."""

from __future__ import annotations

# meta-llama/Meta-Llama-3-70B, config.json (LlamaConfig)
LLAMA_3_70B = {
    "vocab_size": 128256,
    "hidden_size": 8192,
    "intermediate_size": 28672,
    "num_hidden_layers": 80,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "max_position_embeddings": 131072,
    "architectures": ["LlamaForCausalLM"],
}

# meta-llama/Meta-Llama-3-8B, config.json (LlamaConfig)
LLAMA_3_8B = {
    "vocab_size": 128256,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 131072,
    "rope_theta": 500000.0,
    "architectures": ["LlamaForCausalLM"],
}
