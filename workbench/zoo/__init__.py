"""The model zoo at run time: the models the workbench ships by name (:mod:`workbench.zoo.registry`) and
its held-out sample of five domains (:mod:`workbench.zoo.heldout`). How they are made is
:mod:`workbench.zoo_build` (``workbench zoo build``)."""

from workbench.zoo.heldout import DOMAINS, domain_windows, heldout, load_heldout_sample, token_streams
from workbench.zoo.registry import TOKENIZERS, ZooEntry, tokenizer_dir, zoo

__all__ = [
    "DOMAINS",
    "TOKENIZERS",
    "ZooEntry",
    "domain_windows",
    "heldout",
    "load_heldout_sample",
    "token_streams",
    "tokenizer_dir",
    "zoo",
]
