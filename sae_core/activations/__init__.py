"""Activations: harvesting at a hook, the sharded on-disk store, the shuffling batch reader, and
users' own activation files (all read through one ``ActivationStore`` interface)."""
from sae_core.activations.buffer import iter_batches
from sae_core.activations.harvest import harvest_activations, harvest_hooks
from sae_core.activations.job import harvest_hooks_to_workspace, harvest_to_workspace, import_to_workspace
from sae_core.activations.store import ActivationStore, StoreMeta
from sae_core.activations.user_file import import_activation_file, load_activation_file

__all__ = ["ActivationStore", "StoreMeta", "harvest_activations", "harvest_hooks", "harvest_hooks_to_workspace",
           "harvest_to_workspace", "import_activation_file", "import_to_workspace", "iter_batches", "load_activation_file"]
