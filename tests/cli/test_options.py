"""Every command of ``sae-core``, found by walking the app (issue #27, "one source for every
default"): its ``--help`` works and shows its docstring, and every option takes its default (and
help) from the config field it sets, through ``config_option``. An option that sets no field is
listed in ``NOT_CONFIG`` with its default and why, so a new option cannot restate a default silently.
"""
import dataclasses
import inspect

import pytest
import typer
from typer.testing import CliRunner

from sae_core.cli import app

runner = CliRunner()
ROOT = typer.main.get_command(app)
ENV = {"COLUMNS": "200", "TERM": "dumb", "NO_COLOR": "1"}


def _walk(group, path=()):
    """``(path, command)`` for the group and everything under it, depth first."""
    yield path, group
    for name, sub in getattr(group, "commands", {}).items():
        yield from _walk(sub, path + (name,))


ALL = dict(_walk(ROOT))
LEAVES = {" ".join(path): cmd for path, cmd in ALL.items() if not hasattr(cmd, "commands")}

ANY = "*"  # an entry for every command with that option
# (command, option) -> (its default, why it takes it from no config field). Required options have
# no default to restate and need no entry.
NOT_CONFIG = {
    (ANY, "--workspace"): (None, "where artifacts live ($SAE_STUDIO_WORKSPACE or ./workspace), not a job setting"),
    (ANY, "--corpus"): (None, "None is the zoo corpus, TextSource() (whose path is '' for it)"),
    (ANY, "--json"): (False, "how the result is printed"),
    (ANY, "--name"): (None, "the artifact's name; None: named from its inputs"),
    (ANY, "--out"): (None, "where a copy or the output goes; None: none / printed / assets/zoo"),
    (ANY, "--model"): (None, "train/sweep: DEFAULT_MODEL (cli/training.py) or a label for --acts; index: the "
                             "SAE's cfg.json"),
    (ANY, "--hook"): (None, "train/sweep: DEFAULT_HOOK (cli/training.py) or a label for --acts; index: the "
                            "SAE's cfg.json"),
    (ANY, "--acts"): (None, "an input: the user's activation file instead of a harvest"),
    (ANY, "--study"): (None, "which study to read; None: the newest"),
    (ANY, "--token"): (None, "None: the zoo's trigger word (positions_rule)"),
    (ANY, "--pairs"): (None, "an input: one of the two contrast forms, checked by the command"),
    (ANY, "--positive"): (None, "an input: one of the two contrast forms, checked by the command"),
    (ANY, "--negative"): (None, "an input: one of the two contrast forms, checked by the command"),
    (ANY, "--vector"): (None, "inputs: the vectors to apply, none by default"),
    (ANY, "--alpha"): (None, "None: every vector at -1, the trigger's shift taken away (_interventions)"),
    (ANY, "--op"): ("add", "the steer commands' own op (OpOpt); Intervention.op has no default"),
    (ANY, "--positions"): ("trigger", "the steer commands' own rule (PositionsOpt); positions_rule has no default"),
    ("steer eval", "--switch"): (False, "a flag: turn the study's switch on"),
    ("sweep", "--evaluate"): ("", "EvaluationConfig.metrics for an evaluation after the sweep; '' is none"),
    ("evaluate", "--probing"): (False, "flags choosing EvaluationConfig.metrics; none given is every metric"),
    ("evaluate", "--absorption"): (False, "flags choosing EvaluationConfig.metrics; none given is every metric"),
    ("evaluate", "--lottery"): (False, "flags choosing EvaluationConfig.metrics; none given is every metric"),
    ("steer study", "--paper"): (False, "a flag for StudyConfig.mode='paper'; unset, the field's default mode"),
    ("circuit discover", "--paper"): (False, "a flag for CircuitStudyConfig.mode='paper' (and method='paper' "
                                             "unless --method is given); unset, the fields' defaults"),
    ("circuit lens", "--paper"): (False, "a flag for logit_lens(mode='paper'); unset, its default final_norm"),
    ("steer eval", "--switch-name"): (None, "inputs: switches to turn on, none by default"),
    ("steer generate", "--switch"): (None, "inputs: switches to turn on, none by default"),
    ("steer generate", "--positions"): (None, "None: trigger for vectors, all for features (steer_generate)"),
    ("steer generate", "--sae"): (None, "an input: the SAE --feature numbers belong to"),
    ("steer generate", "--feature"): (None, "inputs: features to steer with, none by default"),
    ("steer-pair", "--result"): (None, "which universality result to read; None: the newest"),
    ("steer-pair", "--pair"): (None, "None: the pair of the strongest correlation"),
    ("steer generate", "--gate"): (None, "an input: a gated switch to turn on, none by default"),
    ("steer generate", "--gate-threshold"): (None, "None: the gate's own threshold, chosen on selection prompts"),
    ("steer generate", "--clamp"): (None, "inputs: clamp values, one of the two feature edits (feature_edits)"),
    ("steer generate", "--tokens"): (20, "the command's own: generation.generate's n_new has no default"),
    ("steer map", "--tokens"): (100_000, "the command's own (TokensOpt): mapper_to_workspace's n_tokens has no "
                                         "default"),
    ("steer switch", "--tokens"): (100_000, "the command's own (TokensOpt), as steer map"),
    ("harvest", "--tokens"): (100_000, "the command's own: harvest_to_workspace's n_tokens has no default"),
    ("harvest", "--keep-special"): (False, "the negation of harvest_to_workspace's exclude_special=True"),
    ("harvest", "--device"): (None, "None: cuda when available (load_model, distributed.joined)"),
    ("generate", "--tokens"): (8, "the command's own: generation.generate has no default length"),
    ("hooks", "--contains"): ("", "a filter: '' keeps every hook"),
    ("index", "--parquet"): (None, "also export the index to this file; None: no export"),
    ("universality", "--layers"): (False, "a mode: every layer pair instead of one hook pair"),
    ("universality", "--paper"): (False, "a flag for paper_config(); unset, the steps as the options say"),
    ("universality", "--groups"): (None, "zoo | paper | a JSON file, read into UniversalityConfig.groups; None: the "
                                         "groups of the subspace procedure"),
    ("zoo build", "--only"): (None, "which models: None is every one"),
    ("demo", "--background"): (False, "a mode: start the build detached and return"),
    ("demo", "--profile"): (None, "None: $SAE_STUDIO_DEMO_PROFILE or full (the demo's step sizes)"),
    ("demo", "--quiet"): (False, "how progress is printed"),
    ("workspace list", "--kind"): (None, "a filter: None is every kind"),
    ("circuit edges", "--top"): (20, "how many edges are printed"),
    ("circuit edges", "--export"): (None, "also write the graph here; None: no export"),
    ("circuit heads", "--top"): (10, "how many heads are printed"),
}
# options that word their field's help their own way (``config_option(..., help=...)``)
OWN_HELP = {("circuit edges", "--task"), ("circuit heads", "--task"), ("circuit lens", "--task")}


def _options(cmd):
    """``(click option, the OptionInfo it was built from)`` for each option but --help."""
    sig = inspect.signature(cmd.callback)  # typer's callback wraps (functools) the command's function
    return [(p, sig.parameters[p.name].default) for p in cmd.params
            if p.param_type_name == "option" and p.name != "help"]


def _field_default(source, name):
    """The default the library gives ``name``: a dataclass field's, an instance's value, a function's keyword's."""
    if not dataclasses.is_dataclass(source):
        return inspect.signature(source).parameters[name].default
    if not isinstance(source, type):
        return getattr(source, name)
    f = {f.name: f for f in dataclasses.fields(source)}[name]
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def _shown(option_default, like):
    """The option's default as the field's value (a tuple field's option is comma-separated text)."""
    if isinstance(like, tuple):
        return tuple(type(like[0])(x) for x in option_default.split(",")) if like else ()
    return option_default


def test_the_walk_finds_every_command():
    assert len(LEAVES) >= 25
    assert {"train", "sweep", "universality", "index", "circuit discover", "steer map", "zoo build"} <= set(LEAVES)


@pytest.mark.parametrize("path", list(ALL), ids=lambda p: " ".join(p) or "root")
def test_every_command_has_help_showing_its_docstring(path):
    cmd = ALL[path]
    result = runner.invoke(app, list(path) + ["--help"], env=ENV)
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    doc = inspect.getdoc(cmd.callback) if cmd.callback and not hasattr(cmd, "commands") else cmd.help
    assert doc, f"{' '.join(path) or 'sae-core'} has no docstring"
    first = " ".join(doc.split("\n\n")[0].split())
    assert first in " ".join(result.output.split()), f"--help of {' '.join(path)} misses: {first}"


@pytest.mark.parametrize("name", list(LEAVES))
def test_every_option_takes_its_default_from_its_config_field(name):
    for param, info in _options(LEAVES[name]):
        flag = param.opts[0]
        if (ref := getattr(info, "config_field", None)) is not None:
            source, field = ref
            want = _field_default(source, field)
            assert _shown(param.default, want) == want, (name, flag, param.default, want)
            if dataclasses.is_dataclass(source) and (name, flag) not in OWN_HELP:
                doc = {f.name: f for f in dataclasses.fields(source)}[field].metadata.get("help")
                assert param.help == doc, f"{name} {flag}: its help is not {field}'s doc"
        elif not param.required:
            key = (name, flag) if (name, flag) in NOT_CONFIG else (ANY, flag)
            assert key in NOT_CONFIG, (f"`sae-core {name} {flag}` (default {param.default!r}) sets no config field: "
                                       "build it with config_option(Config, 'field') or list it in NOT_CONFIG")
            assert param.default == NOT_CONFIG[key][0], (name, flag, param.default)


def test_every_not_config_entry_is_still_an_option_of_no_field():
    unmapped = {(name, p.opts[0]) for name, cmd in LEAVES.items() for p, info in _options(cmd)
                if getattr(info, "config_field", None) is None}
    for cmd, flag in NOT_CONFIG:
        assert any(f == flag and cmd in (ANY, n) for n, f in unmapped), f"stale NOT_CONFIG entry {cmd} {flag}"


def test_train_lists_the_trainable_architectures_from_the_one_list():
    from sae_core.sae.config import ARCHITECTURES

    [arch] = [p for p, _ in _options(LEAVES["train"]) if p.name == "arch"]
    assert arch.help == "relu | topk | batchtopk | sampled"
    assert set(arch.help.split(" | ")) == set(ARCHITECTURES) - {"jumprelu"}  # jumprelu: inference only


def test_train_says_which_defaults_it_uses_and_harvests_what_the_run_needs(tmp_path):
    from sae_core.activations import ActivationStore
    from sae_core.cli.training import harvest_needed
    from sae_core.training.data import StreamSplit
    from sae_core.workspace import Workspace

    assert harvest_needed(2048, 512) == 2276  # 4 steps x 512 rows, and a tenth held out: ceil(2048 / 0.9)
    assert harvest_needed(500_000, 1024) == 200_000  # capped: a longer run repeats the rows
    result = runner.invoke(app, ["train", "--arch", "topk", "--k", "4", "--d-sae", "32", "--tokens", "2048",
                                 "--batch-size", "512", "-w", str(tmp_path / "ws")], env=ENV)
    assert result.exit_code == 0, result.output
    assert ("using zoo:tiny-a at blocks.1.hook_resid_post (the defaults; pass --model/--hook to choose)"
            in result.output.splitlines())
    [acts] = Workspace(tmp_path / "ws").list("activations")
    assert (acts.model, acts.hook, acts.meta["n_tokens_requested"]) == ("zoo:tiny-a", "blocks.1.hook_resid_post",
                                                                        2276)
    assert StreamSplit.from_store(ActivationStore.open(acts.path)).n_train >= 2048  # every step reads new rows
