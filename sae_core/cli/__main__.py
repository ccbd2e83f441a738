"""``python -m sae_core.cli`` and ``torchrun ... -m sae_core.cli``: every command of ``sae-core``."""
from sae_core.cli.app import main

main()
