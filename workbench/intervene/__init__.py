"""Interventions: head ablation, value replacement, activation patching and expert routing edits.

Every intervention is a set of hook functions (or router hooks) applied inside a context manager, so it is
undone on exit, also when the forward pass raises::

    with intervene.ablate_heads(model, {3: [0, 5]}):
        logits = model.forward(prompt).logits
"""

from workbench.intervene.heads import ablate_heads, head_means
from workbench.intervene.patch import patch, replace
from workbench.intervene.routing import drop_shared_experts, force_experts, mask_experts, reroute
from workbench.intervene.sinks import remove_sink

__all__ = [
    "ablate_heads",
    "drop_shared_experts",
    "force_experts",
    "head_means",
    "mask_experts",
    "patch",
    "remove_sink",
    "replace",
    "reroute",
]
