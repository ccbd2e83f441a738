"""One exception family for the library; every message names the bad value and the fix."""


class SAECoreError(Exception):
    """Base of every error sae_core raises on purpose (the app shows its message as is)."""


class ModelNotAvailableError(SAECoreError):
    """A model name or directory that cannot be loaded offline."""


class HookNotFoundError(SAECoreError):
    """A hook name the model does not have."""


class ActivationFileError(SAECoreError):
    """A user's activation file that is unreadable, of the wrong shape or dtype, or not finite."""


class ArtifactError(SAECoreError):
    """A workspace artifact that is missing, corrupt, foreign, or cannot be written."""
