"""Feature universality across models (arXiv 2410.06981): paired SAE codes, correlation, matching,
similarity measures of the matched spaces, and their nulls."""
from sae_core.universality.measures import (MEASURES, Score, UniversalityError, linear_cka, mutual_knn, rsa,
                                            score, svcca)

__all__ = ["MEASURES", "Score", "UniversalityError", "linear_cka", "mutual_knn", "rsa", "score", "svcca"]
