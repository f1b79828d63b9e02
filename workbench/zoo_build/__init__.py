"""How the zoo is made (``workbench zoo build``): the corpus, tokenizers, training recipes and loop, the
constructed planted-sink model and the measurements recorded in each model card. The runtime side (the
registry and the held-out sample) is :mod:`workbench.zoo`."""
