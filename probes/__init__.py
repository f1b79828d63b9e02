"""Probes: pure functions from captured model internals to tidy tables (and plotly figures).

Each probe cites its paper and states its formula in its docstring (see ``../shared/PROBES.md``). The topic
modules (sinks, kvcache, moe, compression, lens, tokenizer, decoding) arrive with their issues.
"""
