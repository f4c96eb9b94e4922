"""Hyperparameter declarations (agents/hparams.py): one dataclass per agent, validated on every route."""
from __future__ import annotations

import dataclasses

import pytest

from augmem.agents import REGISTRY, get_agent_class
from augmem.agents.base import CommonHP
from augmem.agents.hparams import check_hparams, declared, defaults, describe, execution_only, results_hparams
from augmem.io import InputError


@pytest.mark.parametrize("impl", sorted(REGISTRY))
def test_every_agent_declares_its_hyperparameters(impl):
    cls = get_agent_class(impl)
    assert dataclasses.is_dataclass(cls.HP) and issubclass(cls.HP, CommonHP)
    decls = declared(cls.HP)
    for name, d in decls.items():
        assert d.help, f"{impl}.{name} has no one-line meaning"
        value, err = d.check(d.default)
        assert err is None, f"{impl}.{name}: its own default fails its check: {err}"
    # the declared defaults pass the whole check, cross-key checks included
    assert cls.check_hparams({}) == defaults(cls.HP)
    assert len(describe(cls.HP).splitlines()) == len(decls)


@pytest.mark.parametrize("impl,unit", [("NaiveRehearsal", "images in total"), ("GEM", "images in total"),
                                       ("AGEM", "images in total"), ("iCaRL", "exemplar images in total"),
                                       ("AugMem", "hypotheses in total")])
def test_memory_size_says_its_unit(impl, unit):
    assert declared(get_agent_class(impl).HP)["memory_size"].unit == unit


def test_agents_without_a_memory_do_not_declare_one():
    for impl in ("NormalNN", "Offline", "L2", "EWC", "EWCOnline", "SI", "MAS"):
        assert "memory_size" not in declared(get_agent_class(impl).HP)


def _error(impl, hp, sources=None) -> str:
    with pytest.raises(InputError) as exc:
        get_agent_class(impl).check_hparams(hp, sources, agent=f"x ({impl})")
    return str(exc.value)


def test_unknown_key_suggests_the_closest_name_and_names_the_source():
    msg = _error("AGEM", {"memroy_size": 60}, {"memroy_size": "config: hparam_overrides.agem"})
    assert "agent x (AGEM)" in msg and "memroy_size" in msg and "did you mean 'memory_size'" in msg
    assert "config: hparam_overrides.agem" in msg


@pytest.mark.parametrize("impl,hp,needle", [
    ("AGEM", {"memory_size": -1}, "must be >= 0"),             # a negative budget silently kept 703 images
    ("NormalNN", {"batch_size": 0}, "must be >= 1"),
    ("NormalNN", {"lr": 0.0}, "must be > 0"),
    ("NormalNN", {"lr": "1e-4"}, "write 1.0e-4"),               # YAML 1.1 reads 1e-4 as a string
    ("NormalNN", {"n_epoch": 2.0}, "must be a int"),
    ("NormalNN", {"keep_best_task1_net": 1}, "must be a bool"),
    ("NormalNN", {"batch_size": True}, "must be a int"),
    ("NormalNN", {"optimizer": "sgd"}, "must be one of"),
    ("NormalNN", {"backbone": "resnet50"}, "must be one of"),
    ("NormalNN", {"n_epoch": None}, "not null"),
    ("NormalNN", {"switch_overrides": {"keep_best_on_tset": False}}, "did you mean 'keep_best_on_test'"),
    ("NormalNN", {"switch_overrides": {"keep_best_on_test": "no"}}, "must be true or false"),
    ("AugMem", {"memory_topK": 3, "memory_Nslots": 2}, "exceeds memory_Nslots"),
    ("AugMem", {"replay_times": -1}, "must be >= 0"),
])
def test_bad_values_are_refused(impl, hp, needle):
    assert needle in _error(impl, hp)


def test_every_problem_is_reported_at_once():
    msg = _error("NormalNN", {"batch_size": 0, "lr": -1.0, "memory_size": 5})
    assert "batch_size" in msg and "lr" in msg and "memory_size" in msg


def test_normalisation_is_the_same_for_every_route():
    full = get_agent_class("NormalNN").check_hparams({"lr": 1, "n_epoch_first_task": None})
    assert full["lr"] == 1.0 and isinstance(full["lr"], float)
    assert full["n_epoch_first_task"] is None
    assert set(full) == set(declared(get_agent_class("NormalNN").HP))


def test_execution_only_settings_are_left_out_of_the_fingerprint_view():
    assert sorted(execution_only(CommonHP)) == ["image_cache", "n_workers"]
    hp = defaults(get_agent_class("AugMem").HP)
    view = results_hparams(get_agent_class("AugMem").HP, hp)
    assert "n_workers" not in view and "image_cache" not in view
    assert "feature_cache" in view and "amp" in view  # these can change numbers


def test_agent_constructor_validates():
    with pytest.raises(InputError, match="memory_size"):
        get_agent_class("NaiveRehearsal")(4, {"weights": "none", "image_size": 32, "memory_size": -5},
                                          __import__("augmem.train.fidelity", fromlist=["x"]).train_switches("reference"))


def test_check_hparams_plain_declaration():
    @dataclasses.dataclass(frozen=True)
    class Tiny:
        pass

    assert check_hparams(Tiny, {}, agent="t") == {}
    with pytest.raises(InputError, match="unknown hyperparameter"):
        check_hparams(Tiny, {"a": 1}, agent="t")
