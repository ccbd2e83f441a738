"""The corpus picker shared by the pages that read text (harvest, sweep, feature index)."""
from __future__ import annotations

import streamlit as st

from sae_core.errors import SAECoreError
from sae_core.models.texts import TextSource


def text_source_input(key: str) -> TextSource | None:
    """An empty path is the zoo corpus; a bad one shows its error and gives None (the caller
    disables its button)."""
    c1, c2, c3 = st.columns([4, 1, 1])
    path = c1.text_input("Corpus (.txt, .jsonl, .parquet or a datasets directory; empty: the zoo corpus)",
                         key=f"{key}_corpus", placeholder="/path/to/corpus.jsonl").strip()
    column = c2.text_input("text column", "text", key=f"{key}_column", disabled=not path)
    split = c3.text_input("split", "train", key=f"{key}_split", disabled=not path,
                          help="Only for a DatasetDict directory")
    if not path:
        return TextSource()
    try:
        text = TextSource(path, column.strip() or "text", split.strip() or "train").check()
    except SAECoreError as e:
        st.error(str(e))
        return None
    st.caption(f"Text: {text.describe()}; every 10th document is held out for CE/KL recovered.")
    return text
