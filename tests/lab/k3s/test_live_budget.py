"""The live K3s labs start only while the test command's time budget can hold them."""
from __future__ import annotations

import time

import pytest
from live_k3s import require_budget


def test_no_budget_no_skip(monkeypatch):
    monkeypatch.delenv("CNILAB_TEST_DEADLINE", raising=False)
    require_budget(10_000, "a lab")


def test_a_budget_that_holds_the_lab(monkeypatch):
    monkeypatch.setenv("CNILAB_TEST_DEADLINE", str(time.time() + 3600))
    require_budget(30, "a lab")


def test_a_short_budget_skips_with_the_figures(monkeypatch):
    monkeypatch.setenv("CNILAB_TEST_DEADLINE", str(time.time() + 600))
    with pytest.raises(pytest.skip.Exception, match=r"has 10 min left and a lab needs up to 35"):
        require_budget(35, "a lab")


def test_a_later_lab_needs_what_the_earlier_one_took(monkeypatch):
    from live_k3s import TAKEN, need_after

    monkeypatch.setitem(TAKEN, "a.toml", 20.0)
    assert need_after("a.toml", 1.1, 40) == pytest.approx(22.0)
    assert need_after("never-ran.toml", 1.1, 40) == 40


def test_live_steps_end_before_the_deadline(monkeypatch):
    from live_k3s import DOWN_RESERVE, within_budget

    monkeypatch.delenv("CNILAB_TEST_DEADLINE", raising=False)
    assert within_budget(1800) == 1800
    monkeypatch.setenv("CNILAB_TEST_DEADLINE", str(time.time() + 1000))
    assert 1000 - DOWN_RESERVE - 5 < within_budget(1800) <= 1000 - DOWN_RESERVE
    assert within_budget(300) == 300
    monkeypatch.setenv("CNILAB_TEST_DEADLINE", str(time.time() + 10))
    assert within_budget(1800) == 60     # never a zero or negative timeout
