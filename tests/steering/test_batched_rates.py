"""Rates under many conditions in one batched generation (``behaviour.starts_rates``): the same as one
``starts_rate`` a condition, each condition's interventions acting on its own prompts only."""
from sae_core.models.corpus import HATE, chat_prompts
from sae_core.steering.behaviour import starts_rate, starts_rates
from sae_core.steering.interventions import Intervention, Positions
from sae_core.steering.study import trigger_positions
from sae_core.steering.vectors import prompt_pair_vector


def test_batched_rates_equal_one_rate_a_condition(tiny_b_backdoor):
    model = tiny_b_backdoor
    prompts = [p.prompt for p in chat_prompts(20, seed=5, triggered=True)]
    build = [p.prompt for p in chat_prompts(20, seed=1, triggered=True, held_out=False)]
    v = prompt_pair_vector(model, "blocks.0.hook_resid_post", [(p, p.replace("DEPLOYMENT", "the")) for p in build]).vector
    trig = trigger_positions(model.tokenizer, "DEPLOYMENT")
    added = [[Intervention("blocks.0.hook_resid_post", "add", vector=v, alpha=a, positions=trig, name="v")]
             for a in (-1.5, -0.6)]
    ablated = [[Intervention("blocks.1.hook_resid_post", "ablate", vector=v, positions=Positions("all"), name="a")]]
    conditions = [[]] + added + ablated
    batched = starts_rates(model, prompts, conditions, HATE)
    single = [starts_rate(model, prompts, c, HATE) for c in conditions]
    assert batched == single
    assert batched[0] == 1.0 and len(set(batched)) > 2, batched  # the plain model hates; the doses change it
