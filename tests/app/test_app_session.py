"""The app's shared model session: ``session.using`` holds each model's lock for its block only."""
import threading

import pytest

from sae_app import session


@pytest.fixture
def fake_models(monkeypatch):
    monkeypatch.setattr(session, "load_model", lambda name: f"model:{name}")


def test_using_yields_models_in_order_and_holds_their_locks(fake_models):
    with session.using("zoo:b", "zoo:a") as models:
        assert models == ("model:zoo:b", "model:zoo:a")
        assert session.model_lock("zoo:a").locked() and session.model_lock("zoo:b").locked()
        assert not session.model_lock("zoo:c").locked()
    assert not session.model_lock("zoo:a").locked() and not session.model_lock("zoo:b").locked()


def test_using_the_same_model_twice_takes_its_lock_once(fake_models):
    with session.using("zoo:a", "zoo:a") as models:  # base and fine-tune may be one model
        assert models == ("model:zoo:a", "model:zoo:a")
    assert not session.model_lock("zoo:a").locked()


def test_using_releases_the_locks_when_the_pass_fails(fake_models):
    with pytest.raises(RuntimeError, match="boom"):
        with session.using("zoo:a", "zoo:b"):
            raise RuntimeError("boom")
    assert not session.model_lock("zoo:a").locked() and not session.model_lock("zoo:b").locked()


def test_a_second_tab_waits_for_the_first_tabs_pass(fake_models):
    order = []
    inside = threading.Event()

    def other_tab():
        inside.wait()
        with session.using("zoo:a"):
            order.append("second")

    t = threading.Thread(target=other_tab)
    t.start()
    with session.using("zoo:b", "zoo:a"):
        inside.set()
        t.join(timeout=0.3)  # it cannot get in while this pass holds zoo:a
        assert t.is_alive()
        order.append("first")
    t.join(timeout=5)
    assert order == ["first", "second"]
