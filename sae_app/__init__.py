"""App-side helpers of the Streamlit app (caching, shared sidebar); the only place that imports both streamlit and sae_core."""
