"""The command line, ``sae-core`` (also ``python -m sae_core.cli`` and ``torchrun ... -m sae_core.cli``)."""
from sae_core.cli.app import app, main

__all__ = ["app", "main"]
