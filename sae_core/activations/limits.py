"""How many tokens a harvest may ask for: one range for the library, ``sae-core harvest`` and the
Activations page's input (which takes its bounds from here)."""
from __future__ import annotations

import numbers
import shutil
from pathlib import Path

from sae_core.errors import SAECoreError

# fewer is not a harvest anything downstream can use (an SAE batch, a norm histogram), and is
# most likely a typo for thousands
MIN_TOKENS = 256
# ten billion rows: beyond any corpus or disk this runs on (at d = 128 float32, 5 TB); a larger
# number is a typo, found here instead of after hours of harvesting
MAX_TOKENS = 10_000_000_000
BYTES_PER_VALUE = 4  # stores are float32


def check_token_count(n_tokens: int) -> None:
    """Raise ``SAECoreError`` naming ``n_tokens`` and the allowed range unless it is in it."""
    if isinstance(n_tokens, bool) or not isinstance(n_tokens, numbers.Integral) or not MIN_TOKENS <= n_tokens <= MAX_TOKENS:
        raise SAECoreError(f"n_tokens={n_tokens!r}: a harvest takes {MIN_TOKENS:,} to {MAX_TOKENS:,} tokens; "
                           "ask for a whole number in that range")


def check_disk_room(root: Path, n_tokens: int, widths: list[int]) -> None:
    """Raise ``SAECoreError`` when ``n_tokens`` rows of each of ``widths`` (float32) cannot fit in
    the free space of the disk holding ``root``."""
    need = n_tokens * sum(widths) * BYTES_PER_VALUE
    free = shutil.disk_usage(root).free
    if need > free:
        raise SAECoreError(f"n_tokens={n_tokens:,} needs {need / 1e9:,.1f} GB for its activations "
                           f"({' + '.join(map(str, widths))} values per token, float32) but {root} has "
                           f"{free / 1e9:,.1f} GB free; harvest at most {free // (sum(widths) * BYTES_PER_VALUE):,} "
                           "tokens or free some space")
