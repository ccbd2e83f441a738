"""An unusable workspace: the app says what to do in the app, the CLI what to do in the shell."""
import pytest

from sae_core.errors import ArtifactError
from sae_core.workspace import Workspace
from tests.helpers import app_test, page_errors


def test_the_sidebar_tells_the_app_user_to_type_another_directory(workspace, tmp_path):
    bad = tmp_path / "a-file"
    bad.write_text("not a directory")
    at = app_test().run()
    at.sidebar.text_input(key="sb_workspace").set_value(str(bad)).run()
    assert not at.exception
    errors = page_errors(at)
    assert any(str(bad) in e for e in errors), errors
    for e in errors:  # the sidebar's error and the home page's: both in the app's words
        assert "--workspace" not in e and "SAE_STUDIO_WORKSPACE" not in e, e
    assert any("type a writable directory in the sidebar's \"Workspace directory\" field (or empty it for the "
               f"default, {workspace.root})" in e for e in errors), errors
    at.switch_page("views/activations.py").run()
    assert not at.exception
    assert [e for e in page_errors(at) if "--workspace" in e] == []
    assert any("Workspace directory" in e for e in page_errors(at)), page_errors(at)


def test_the_library_keeps_the_shell_advice(tmp_path):
    bad = tmp_path / "a-file"
    bad.write_text("not a directory")
    with pytest.raises(ArtifactError, match=r"not writable .*choose another directory with --workspace or "
                                            r"SAE_STUDIO_WORKSPACE"):
        Workspace(bad)
