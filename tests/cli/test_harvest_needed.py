"""What `train`/`sweep` harvest when --harvest-tokens is not given: what the run reads, within the
harvest's own bounds."""
from sae_core.activations.limits import MIN_TOKENS
from sae_core.cli.training import HARVEST_CAP, harvest_needed


def test_the_run_harvests_its_rows_and_held_out_share_within_the_harvests_bounds():
    assert harvest_needed(2048, 1024) == 2276            # 2 steps x 1024 rows, and the held-out tenth on top
    assert harvest_needed(64, 64) == MIN_TOKENS          # a tiny run still asks for a harvest that is allowed
    assert harvest_needed(10**9, 1024) == HARVEST_CAP    # a long run repeats rows
