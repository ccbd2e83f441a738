"""sae_core: the library behind sae-studio (models, activations, SAEs, analyses); no Streamlit here."""
__version__ = "0.1.0"
