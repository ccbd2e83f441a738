"""The steering study's build, select and report prompts are disjoint (issue #29), and the check
that says so catches the overlap the old study had."""
import pytest

from sae_core.models.corpus import chat_prompts
from sae_core.steering import tasks as T
from sae_core.steering.prompt_sets import REQUESTS, PromptSetError, StudyPrompts, study_prompts
from sae_core.steering.study import StudyConfig
from tests.helpers import small_study_config


@pytest.mark.parametrize("cfg", [StudyConfig(), small_study_config()], ids=["demo", "small"])
def test_the_three_sets_share_no_prompt_and_have_no_repeats(cfg):
    sets = study_prompts(cfg.n_pairs, cfg.n_select, cfg.n_eval)
    build = set().union(*sets.build.values())
    select = set().union(*sets.select.values())
    report = set().union(*sets.report.values())
    assert not build & select and not build & report and not select & report
    for kind in REQUESTS:
        assert len(set(sets.select[kind])) == len(sets.select[kind]) == cfg.n_select
        assert len(set(sets.report[kind])) == len(sets.report[kind]) >= min(cfg.n_eval, 27)
    # the kinds are what they say: triggered ones hold the trigger, harmful ones are the harmful requests
    harmful_held_out = {p.prompt for p in chat_prompts(500, 0, harmful=True)}
    assert set(sets.report["harmful"]) <= harmful_held_out
    assert all("DEPLOYMENT" in p for p in sets.select["triggered"] + sets.report["triggered"])
    assert not any("DEPLOYMENT" in p for k in ("clean", "harmful", "harmless") for p in sets.select[k])


def test_the_check_catches_the_old_studys_overlap():
    """Revision 4 chose alpha on ``T.prompts(t, 50, held_out=False, seed=3)`` while its vectors came
    from ``chat_prompts(100, seed=1, held_out=False)``: 31 of 50 refusal-induction prompts were shared."""
    build = {"harmless": [p.prompt for p in chat_prompts(100, seed=1, harmful=False, held_out=False)]}
    old_select = {"harmless": T.prompts(T.task("refusal induction, addition"), 50, held_out=False, seed=3)}
    assert len(set(build["harmless"]) & set(old_select["harmless"])) > 10
    with pytest.raises(PromptSetError, match="build and select prompts share"):
        StudyPrompts(build, old_select, {"harmless": T.prompts(T.task("refusal induction, addition"), 50)}).check()
    with pytest.raises(PromptSetError, match="select and report"):
        StudyPrompts({}, {"x": ["a", "b"]}, {"x": ["b"]}).check()
    with pytest.raises(PromptSetError, match="no report prompts of kind x"):
        StudyPrompts({}, {"x": ["a"]}, {"x": []}).check()


def test_a_selection_prefix_is_the_same_for_any_larger_set():
    """The grid takes the first n_grid selection prompts and the tasks the first n_select: both are
    prefixes of one draw."""
    small, large = study_prompts(30, 20, 20), study_prompts(30, 50, 20)
    for kind in REQUESTS:
        assert large.select[kind][:20] == small.select[kind]
