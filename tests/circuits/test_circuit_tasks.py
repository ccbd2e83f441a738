"""Circuit tasks and metrics: the paper's prompts, filter and logit difference on the zoo."""
import numpy as np
import pytest
import torch

from sae_core.circuits import CircuitError, TaskConfig, evaluate, kl_to_model, logit_diff, make_task, performance
from sae_core.circuits.metrics import faithfulness
from sae_core.circuits.tasks import one_token_ids
from sae_core.models.corpus import MONTHS


def test_metrics_against_hand_worked_values():
    logits = torch.tensor([[1.0, 3.0, 0.5], [2.0, 0.0, 1.0]])
    answer, distractor = torch.tensor([1, 0]), torch.tensor([0, 2])
    assert logit_diff(logits, answer, distractor).tolist() == [2.0, 1.0]
    assert performance(torch.tensor([1.0, 0.5]), torch.tensor([2.0, 1.0])) == pytest.approx(50.0)
    assert faithfulness(0.7, 1.0, 0.1) == pytest.approx(2 / 3)
    other = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    p = np.exp(logits.numpy()) / np.exp(logits.numpy()).sum(1, keepdims=True)
    q = np.exp(other.numpy()) / np.exp(other.numpy()).sum(1, keepdims=True)
    assert kl_to_model(logits, other) == pytest.approx(np.mean(np.sum(p * np.log(p / q), 1)), rel=1e-6)
    m = evaluate(logits, logits, answer, distractor)
    assert m.performance == pytest.approx(100.0) and m.kl == pytest.approx(0.0, abs=1e-12)
    assert m.top1 == 1.0 and m.p_answer == pytest.approx(float(np.mean([p[0, 1], p[1, 0]])))
    with pytest.raises(CircuitError, match="does not prefer the answer"):
        performance(torch.ones(2), -torch.ones(2))


def test_month_prompts_the_model_continues_with_their_corrupted_twins(tiny_b):
    ts = make_task(tiny_b, TaskConfig(task="months", n_prompts=40, seed=1))
    tok = tiny_b.tokenizer
    assert ts.stats.generated == 40 and ts.stats.kept == len(ts) == len(ts.texts)
    assert ts.stats.kept + ts.stats.wrong_top1 + ts.stats.weak_margin == 40 and len(ts) >= 30
    assert ts.clean_BT.shape == ts.corrupt_BT.shape  # one token length: a per-position mean exists
    for text, bad, a, d in zip(ts.texts, ts.corrupt_texts, ts.answer_B.tolist(), ts.distractor_B.tolist()):
        shown = [w for w in text.split() if w in MONTHS]
        assert len(shown) == 4 and tok.decode([d]).strip() == shown[-1]
        assert tok.decode([a]).strip() == MONTHS[(MONTHS.index(shown[-1]) + 1) % 12]
        words, corrupt_words = text.split(), bad.split()
        # the corrupted twin changes the members only, each to one of the first 12 months
        assert len(words) == len(corrupt_words)
        assert all(w == c for w, c in zip(words, corrupt_words) if w not in MONTHS)
        assert all(c in MONTHS[:12] for w, c in zip(words, corrupt_words) if w in MONTHS)
    with torch.no_grad():
        logits = tiny_b(ts.clean_BT)[:, -1]
    probs = torch.softmax(logits, -1)
    rows = torch.arange(len(ts))
    assert (probs.argmax(-1) == ts.answer_B).all()                                   # the paper's filter
    assert (probs[rows, ts.answer_B] > 2 * probs[rows, ts.distractor_B]).all()
    assert (logit_diff(logits, ts.answer_B, ts.distractor_B) > 0).all()


def test_bare_digits_and_the_filter_statistics(tiny_b):
    ts = make_task(tiny_b, TaskConfig(task="digits", template="bare", n_prompts=20, starts=(1, 2, 3, 4, 5, 6, 7, 8)))
    assert all(int(t.split()[0]) in range(1, 9) for t in ts.texts)  # the paper's starts 1-8
    assert ts.clean_BT.shape[1] == 5  # BOS and four digits


def test_bad_tasks_are_clear_errors(tiny_b):
    with pytest.raises(CircuitError, match="task 'primes'"):
        TaskConfig(task="primes")
    with pytest.raises(CircuitError, match="shown=12"):
        TaskConfig(task="months", shown=12)
    with pytest.raises(CircuitError, match=r"starts \[20\]"):
        TaskConfig(task="number_words", starts=(20,))
    with pytest.raises(CircuitError, match="'Quetzalcoatl' is not one token"):
        one_token_ids(tiny_b.tokenizer, ["March", "Quetzalcoatl"])

    class Blind:  # the zoo model's tokenizer, but logits that prefer nothing
        tokenizer, to_tokens, parameters = tiny_b.tokenizer, tiny_b.to_tokens, tiny_b.parameters

        def __call__(self, tokens_BT):
            return torch.zeros(*tokens_BT.shape, tiny_b.cfg.d_vocab)
    with pytest.raises(CircuitError, match="got 0 of 8 months prompts right"):
        make_task(Blind(), TaskConfig(task="months", n_prompts=8))


def test_paper_prompts_mix_three_verbs_never_wrap_and_corrupt_off_the_sequence(tiny_b):
    """paper=True: the authors' three verb templates in thirds (their 'lost' and 'born' are not zoo
    tokens: the stand-ins are named), members from their twelve with no wrap, and corrupted members
    whose last two are never consecutive (r4 - 1 != r3)."""
    from sae_core.circuits.tasks import paper_window
    from sae_core.models.corpus import NAMES, NOUNS

    months = make_task(tiny_b, TaskConfig(task="months", n_prompts=48, seed=3, paper=True))
    assert months.verbs == ["done", "found (for lost)", "lived (for born)"]
    assert months.stats.generated == 48 and len(months) >= 40
    verbs, starts = [], set()
    for text, bad in zip(months.texts, months.corrupt_texts):
        words = text.split()
        verb = words[1]
        verbs.append(verb)
        assert all(w == verb for w in words[1::5])                       # one verb per prompt
        assert all(s in (NAMES if verb == "lived" else NOUNS) for s in words[0::5])
        shown = [w for w in words if w in MONTHS]
        idx = [MONTHS.index(m) for m in shown]
        assert idx == list(range(idx[0], idx[0] + 4)) and idx[0] <= 7   # starts 1-8, answer at most December
        starts.add(idx[0])
        corrupt = [MONTHS.index(w) for w in bad.split() if w in MONTHS]
        assert len(corrupt) == 4 and corrupt[3] - 1 != corrupt[2]
    assert starts == set(range(8))
    assert {v: verbs.count(v) for v in set(verbs)} == pytest.approx({"done": 16, "found": 16, "lived": 16}, abs=8)
    assert verbs == sorted(verbs, key=["done", "found", "lived"].index)  # in the authors' order, in blocks
    rows = torch.arange(len(months))
    answers = [tiny_b.tokenizer.decode([a]).strip() for a in months.answer_B.tolist()]
    assert "January" not in answers and all(MONTHS.index(a) >= 4 for a in answers)  # no December -> January
    # digits: the authors' 1-12, never 0; their filter, as in the default mode
    digits = make_task(tiny_b, TaskConfig(task="digits", n_prompts=24, paper=True))
    assert paper_window("digits") == [str(i) for i in range(1, 13)]
    for text, bad in zip(digits.texts, digits.corrupt_texts):
        members = [int(w) for w in text.split() if w.isdigit()]
        corrupt = [int(w) for w in bad.split() if w.isdigit()]
        assert 1 <= members[0] <= 8 and all(1 <= c <= 12 for c in corrupt) and corrupt[3] - 1 != corrupt[2]
    with torch.no_grad():
        probs = torch.softmax(tiny_b(months.clean_BT)[:, -1], -1)
    assert (probs.argmax(-1) == months.answer_B).all()
    assert (probs[rows, months.answer_B] > 2 * probs[rows, months.distractor_B]).all()
    with pytest.raises(CircuitError, match=r"starts \[8\].*authors' members"):
        TaskConfig(task="digits", starts=(8,), paper=True)
