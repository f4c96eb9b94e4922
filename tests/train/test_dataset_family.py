"""A dataset's hyperparameter family is separate from its on-disk layout: a user's own class-folder tree (layout
class_folders, the CIFAR-100 layout) gets the agents' own values unless it asks for CIFAR-100's family."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from augmem.io import InputError
from augmem.train.hparams import load_params, resolve_job

REPO = Path(__file__).resolve().parents[2]
OWN = {"layout": "class_folders", "n_class": 10, "scenarios": ["class_iid"], "tasks": {"n_class": 2}}


@pytest.fixture(scope="module")
def params():
    return load_params(REPO / "params")


def _with(params, **datasets):
    return {**params, "datasets": {**params["datasets"], **datasets}}


def test_no_family_gets_the_agents_own_values(params):
    own = resolve_job(_with(params, mine=OWN), "mine", "augmem", "class_iid")
    cifar = resolve_job(params, "cifar100", "augmem", "class_iid")
    assert own.family is None and cifar.family == "cifar100"
    # CIFAR-100's published AugMem: 1000 slots of 128 features, memory 2000, sparsity 1
    assert (cifar.hp["memory_Nslots"], cifar.hp["memory_Nfeat"], cifar.hp["memory_size"]) == (1000, 128, 2000)
    spec = params["agents"]["agents"]["augmem"]["hp"]
    for key in ("memory_Nslots", "memory_Nfeat", "memory_size", "mem_sparse"):
        assert own.hp[key] == spec[key], key
        assert own.sources[key] == "params/agents.yaml: agents.augmem.hp"
    for agent in ("icarl", "lower_bound", "ewc"):  # CIFAR-100's keep-best and 10 first-task epochs do not apply
        hp = resolve_job(_with(params, mine=OWN), "mine", agent, "class_iid").hp
        assert hp["keep_best_task1_net"] is False and hp["keep_best_net_all_tasks"] is False, agent
        assert resolve_job(params, "cifar100", agent, "class_iid").hp["keep_best_task1_net"] is True, agent


def test_family_opts_into_the_published_values(params):
    mine = resolve_job(_with(params, mine=dict(OWN, family="cifar100")), "mine", "augmem", "class_iid")
    assert mine.family == "cifar100" and mine.hp == resolve_job(params, "cifar100", "augmem", "class_iid").hp


def test_published_families(params):
    fam = {ds: resolve_job(params, ds, "lower_bound", e["scenarios"][0]).family for ds, e in params["datasets"].items()}
    assert fam == {"core50": "core50", "toybox": "toybox", "ilab2mlight": "ilab2mlight", "cifar100": "cifar100",
                   "core50_demo": "core50", "toybox_demo": "toybox", "ilab2mlight_demo": "ilab2mlight",
                   "cifar100_demo": "cifar100"}


def test_old_kind_key_is_an_error(params, tmp_path):
    with pytest.raises(InputError, match="`kind` was replaced by `layout`"):
        resolve_job(_with(params, old={"kind": "cifar100", "n_class": 10}), "old", "augmem", "class_iid")
    cfg = tmp_path / "mine.yaml"
    cfg.write_text(yaml.safe_dump({"define_datasets": {"mine": OWN}}))
    job = resolve_job(load_params(REPO / "params", [cfg]), "mine", "augmem", "class_iid")
    assert job.family is None and job.n_class == 10
