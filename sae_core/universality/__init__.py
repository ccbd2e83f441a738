"""Feature universality across models (arXiv 2410.06981): paired SAE codes, streamed correlation,
matching with this project's filters or the authors' (``job.paper_config``), similarity measures of
the matched decoder rows, their nulls, and the job that writes a ``universality`` artifact (``job.universality_to_workspace``)."""
from sae_core.universality.measures import (MEASURES, Score, UniversalityError, linear_cka, mutual_knn, rsa,
                                            score, svcca)

__all__ = ["MEASURES", "Score", "UniversalityError", "linear_cka", "mutual_knn", "rsa", "score", "svcca"]
