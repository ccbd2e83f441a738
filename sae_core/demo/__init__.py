"""The demo workspace the app shows at first open: its steps and profiles (``steps``), its build in
this process or in the background (``build``), and the progress file the app reads (``progress``)."""
from sae_core.demo.build import build_demo, start_background
from sae_core.demo.progress import BuildState, DemoError, read_state
from sae_core.demo.steps import (DEMO_HOOK, DEMO_MODEL, DEMO_STEPS, PROFILES, DemoProfile, DemoStep,
                                 demo_circuits_config, profile_named)

__all__ = ["build_demo", "start_background", "BuildState", "DemoError", "read_state", "DEMO_HOOK", "DEMO_MODEL",
           "DEMO_STEPS", "PROFILES", "DemoProfile", "DemoStep", "demo_circuits_config", "profile_named"]
