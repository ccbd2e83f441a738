"""Sparse probing (SAEBench's method): numbers against a scikit-learn reference, the zoo tasks'
labels and splits, the random-latent baseline, and bad input."""
import json

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from sae_core.evaluation.config import ProbingConfig
from sae_core.evaluation.probing import (_last_token_of_spans, example_features, sparse_probing,
                                         task_activations, top_k_mean_diff)
from sae_core.evaluation.probing_tasks import ZOO_TASKS, ProbingError, read_labels_file
from sae_core.models import corpus

HOOK = "blocks.1.hook_resid_post"
SMALL = ProbingConfig(tasks=("month_name", "story_vs_chat"), ks=(1, 5), examples=60, documents=40, random_draws=3)


@pytest.fixture(scope="module")
def small_data(tiny_a):
    return [task_activations(tiny_a, HOOK, ZOO_TASKS[t], SMALL) for t in SMALL.tasks]


def _random_sae(seed=0):
    from sae_core.sae.config import SAEConfig
    from sae_core.sae.registry import create_sae

    torch.manual_seed(seed)
    return create_sae(SAEConfig(arch="topk", d_in=128, d_sae=96, k=8)).eval()


def test_accuracies_equal_a_scikit_learn_reference(small_data):
    """Every SAE and raw-activation accuracy, recomputed with numpy (mean pooling, the top-k rule)
    and scikit-learn directly, agrees to 1e-6."""
    sae = _random_sae()
    result = sparse_probing(sae, small_data, SMALL)
    for data in small_data:
        codes = sae.encode(data.acts_MD).detach().numpy()
        n = len(data.label_E)
        pooled = {"sae": np.stack([codes[data.example_M.numpy() == e].mean(0) for e in range(n)]),
                  "llm": np.stack([data.acts_MD.numpy()[data.example_M.numpy() == e].mean(0) for e in range(n)])}
        tr, te, y = data.train_E, ~data.train_E, data.label_E
        for row in (r for r in result.rows if r["task"] == data.task):
            for col in ("sae", "llm"):
                if row[col] is None:
                    continue
                x = pooled[col]
                if row["k"] is None:
                    cols = np.arange(x.shape[1])
                else:
                    diff = np.abs(x[tr][y[tr] == 1].mean(0) - x[tr][y[tr] == 0].mean(0))
                    cols = np.argsort(-diff, kind="stable")[:row["k"]]
                ref = LogisticRegression(C=1.0, max_iter=1000).fit(x[tr][:, cols], y[tr])
                assert abs(row[col] - (ref.predict(x[te][:, cols]) == y[te]).mean()) <= 1e-6, (data.task, row, col)


def test_classes_are_balanced_and_token_examples_are_one_row(small_data):
    month, story = small_data
    for data in small_data:
        for split in (data.train_E, ~data.train_E):
            assert data.label_E[split].mean() == 0.5
    assert month.level == "token" and len(month.acts_MD) == len(month.label_E)
    assert story.level == "sequence" and len(story.acts_MD) > 5 * len(story.label_E)


def test_month_tokens_are_the_labelled_ones(tiny_a):
    """The rows of positive token examples are the model's activations at month tokens: their
    mean equals the mean at the month positions found by decoding tokens."""
    from sae_core.models.hooks import capture
    from sae_core.models.loading import to_tokens

    cfg = ProbingConfig(tasks=("month_name",), examples=10_000, documents=12)
    data = task_activations(tiny_a, HOOK, ZOO_TASKS["month_name"], cfg)
    split = ZOO_TASKS["month_name"].build(cfg.seed, cfg.documents)
    rows = []
    for e in split.train:
        toks = to_tokens(tiny_a, [e.text])
        acts = capture(tiny_a, toks, [HOOK])[HOOK][0]
        words = tiny_a.tokenizer.convert_ids_to_tokens(toks[0].tolist())
        rows += [acts[i] for i, w in enumerate(words) if w in corpus.MONTHS]
    positives = data.acts_MD[torch.from_numpy(data.train_E & (data.label_E == 1))]
    assert len(positives) == len(rows) > 0
    torch.testing.assert_close(positives.mean(0), torch.stack(rows).mean(0), rtol=1e-5, atol=1e-5)


def test_a_multi_token_word_labels_its_last_token():
    # "Septem" + "ber" + " ," (a byte-level tokenizer would split the month)
    offsets = [(0, 6), (6, 9), (9, 11)]
    assert _last_token_of_spans(offsets, [(0, 9, 1), (10, 11, 0)]) == [(1, 1), (2, 0)]


def test_train_and_test_texts_are_disjoint_for_every_zoo_task():
    for task in ZOO_TASKS.values():
        split = task.build(0, 60)
        assert split.train and split.test, task.name
        assert not {e.text for e in split.train} & {e.text for e in split.test}, task.name
    # the chat tasks: training requests are the generator's training keys, test ones held out
    held_out = {p.prompt for p in corpus.chat_prompts(60, seed=0, held_out=True)}
    train = {e.text for e in ZOO_TASKS["harmful_prompt"].build(0, 60).train}
    assert train and not train & held_out


def test_top_k_mean_diff_picks_the_separating_columns():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 50)
    x = rng.normal(size=(100, 6))
    x[:, 4] += 3 * y
    x[:, 1] -= 1.5 * y
    assert list(top_k_mean_diff(x, y, 2)) == [4, 1]
    assert example_features(torch.tensor([[1.0], [3.0], [5.0]]), torch.tensor([0, 0, 1]), 2).ravel().tolist() == [2.0, 5.0]


def test_sae_latents_beat_random_latents_on_a_trained_sae(tmp_path_factory, tiny_a, small_data):
    """A trained SAE's best latents (chosen on training examples) classify test examples better
    than latents drawn at random among the active ones."""
    from sae_core.sae.io import load_sae
    from sae_core.workspace import Workspace
    from tests.helpers import small_sweep

    ws = Workspace(tmp_path_factory.mktemp("probe_ws"))
    small_sweep(ws, ls=(4.0,))
    sae = load_sae(next(a for a in ws.list("sae") if a.meta["arch"] == "batchtopk").path)
    mean = sparse_probing(sae, small_data, SMALL).mean
    assert mean["sae_top_1"] > mean["random_top_1"]
    assert mean["sae_top_5"] > mean["random_top_5"]


def test_a_user_labels_file_is_a_sequence_task(tmp_path, tiny_a):
    path = tmp_path / "labels.jsonl"
    rows = [{"text": f"Once upon a time there was a {a} .", "label": "story"} for a in corpus.ANIMALS[:12]]
    rows += [{"text": f"User : How do I {v} {o} ? Assistant :", "label": "chat"} for v, o in corpus.HARMLESS_ACTIONS[:12]]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    task = read_labels_file(path)
    assert (task.level, task.positive, task.negative) == ("sequence", "label 'story'", "label 'chat'")
    split = task.build(0, 0)
    assert len(split.train) + len(split.test) == 24 and not {e.text for e in split.train} & {e.text for e in split.test}
    data = task_activations(tiny_a, HOOK, task, ProbingConfig(examples=100))
    assert sorted(set(data.label_E)) == [0, 1]


@pytest.mark.parametrize("lines, message", [
    (['{"text": "a", "label": 1}'] * 6, "1 distinct labels"),
    (['{"text": "a", "label": 1}', "not json"], "line 2 is not JSON"),
    (['{"txt": "a", "label": 1}'], 'line 1 needs a string "text"'),
    (['{"text": "a", "label": 1}'] * 6 + ['{"text": "b", "label": 0}'], "give at least 5 of each"),
])
def test_bad_labels_files_are_refused_clearly(tmp_path, lines, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ProbingError, match=message):
        read_labels_file(path)
    with pytest.raises(ProbingError, match="does not exist"):
        read_labels_file(tmp_path / "missing.jsonl")


@pytest.mark.parametrize("kw, message", [(dict(tasks=("months",)), "unknown probing task"),
                                         (dict(ks=(0,)), "each k must be"), (dict(examples=0), "examples=0")])
def test_bad_probing_settings_are_refused(kw, message):
    with pytest.raises(ProbingError, match=message):
        ProbingConfig(**kw)
