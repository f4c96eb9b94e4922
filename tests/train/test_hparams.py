"""Resolution of a job's hyperparameters (train/hparams.py): layers, sources, validation, config files."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from augmem.io import InputError
from augmem.train.hparams import load_params, merge_config, resolve_hparams, resolve_job

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def params():
    return load_params(REPO / "params")


def test_every_published_job_resolves(params):
    n = 0
    for ds, entry in params["datasets"].items():
        for agent in params["agents"]["agents"]:
            for sc in entry["scenarios"]:
                resolve_job(params, ds, agent, sc)
                n += 1
    assert n > 500


@pytest.mark.parametrize("ds,agent,sc,expected", [
    # spec 8: published values, each from its layer
    ("core50", "augmem", "class_instance", {"lr": 2.5e-4, "memory_Nslots": 100, "memory_Nfeat": 8,
                                              "weight_decay": 1e-4, "weights": "imagenet", "replay_coef": 5.0}),
    ("toybox", "augmem", "class_iid", {"memory_Nslots": 500, "batch_size": 20, "n_epoch_first_task": None}),
    ("cifar100", "icarl", "class_iid", {"memory_size": 100, "n_epoch_first_task": 10, "keep_best_task1_net": True}),
    ("core50", "mas", "class_iid", {"lr": 0.001, "reg_coef": 1.0}),
    ("core50_demo", "agem", "class_iid", {"memory_size": 40, "image_size": 64, "lr": 3e-4, "n_workers": 0}),
    ("core50_demo", "lower_bound", "class_iid", {"visualize": True, "head_bias_init": 1.0}),
])
def test_published_values(params, ds, agent, sc, expected):
    _, hp = resolve_hparams(params, ds, agent, sc)
    for k, v in expected.items():
        assert hp[k] == v, k


def test_sources_name_the_layer(params):
    job = resolve_job(params, "core50", "augmem", "class_instance")
    assert job.sources["lr"] == "params/agents.yaml: agents.augmem.overrides[0]"
    assert job.sources["weights"] == "params/agents.yaml: all_agents"
    assert "memory_size" in job.sources and "optimizer" not in job.sources  # declared default
    demo = resolve_job(params, "core50_demo", "agem", "class_iid")
    assert demo.sources["memory_size"] == "datasets: core50_demo.agent_hp.agem"


def test_keys_for_all_agents_apply_to_those_declaring_them(params):
    config = merge_config(params["default"], {"hparam_overrides": {"all": {"memory_size": 7, "lr": 0.5}}})
    assert resolve_hparams(params, "core50", "naive_rehearsal", "class_iid", config)[1]["memory_size"] == 7
    lb = resolve_hparams(params, "core50", "lower_bound", "class_iid", config)[1]
    assert "memory_size" not in lb and lb["lr"] == 0.5


@pytest.mark.parametrize("overrides,needles", [
    ({"all": {"memroy_size": 7}}, ["memroy_size", "config: hparam_overrides.all", "no agent declares",
                                   "did you mean 'memory_size'"]),
    ({"agem": {"memory_size": -3}}, ["agent agem (AGEM)", "memory_size = -3", "config: hparam_overrides.agem",
                                     ">= 0"]),
    ({"lower_bound": {"memory_size": 3}}, ["unknown hyperparameter", "lower_bound"]),
    ({"lower_bund": {"lr": 0.1}}, ["hparam_overrides.lower_bund", "unknown agent", "did you mean 'lower_bound'"]),
])
def test_errors_name_agent_key_and_source(params, overrides, needles):
    config = merge_config(params["default"], {"hparam_overrides": overrides})
    agent = next(iter(k for k in overrides if k != "all" and k != "lower_bund"), "agem")
    with pytest.raises(InputError) as exc:
        resolve_job(params, "core50", agent, "class_iid", config)
    for needle in needles:
        assert needle in str(exc.value)


def test_unknown_dataset_and_agent(params):
    with pytest.raises(InputError, match="did you mean 'core50'"):
        resolve_job(params, "core5O", "augmem", "class_iid")
    with pytest.raises(InputError, match="did you mean 'augmem'"):
        resolve_job(params, "core50", "augmen", "class_iid")


def test_configfiles_merge_and_declare_datasets(tmp_path):
    cfg = tmp_path / "mine.yaml"
    cfg.write_text(yaml.safe_dump({
        "hparam_overrides": {"augmem": {"memory_size": 100}},
        "define_datasets": {"photos": {"layout": "class_folders", "family": "cifar100", "n_class": 10,
                                       "scenarios": ["class_iid"],
                                       "tasks": {"n_class": 2}, "hp": {"image_size": 64}}},
    }))
    params = load_params(REPO / "params", [cfg])
    assert params["default"]["runs"] == yaml.safe_load((REPO / "params/default.yaml").read_text())["runs"]
    assert "photos" in params["datasets"] and "core50" in params["datasets"]
    job = resolve_job(params, "photos", "augmem", "class_iid")
    assert job.hp["memory_size"] == 100 and job.hp["image_size"] == 64 and job.n_class == 10
    assert job.sources["image_size"] == "datasets: photos.hp"


def test_merge_config_is_recursive_and_pure():
    base = {"a": {"b": 1, "c": 2}, "d": [1]}
    out = merge_config(base, {"a": {"b": 5}}, {"d": [2]})
    assert out == {"a": {"b": 5, "c": 2}, "d": [2]} and base == {"a": {"b": 1, "c": 2}, "d": [1]}


def test_bad_parameter_files(tmp_path):
    for name in ("default", "datasets", "agents"):
        (tmp_path / f"{name}.yaml").write_text((REPO / "params" / f"{name}.yaml").read_text())
    (tmp_path / "agents.yaml").write_text("agents: [1, 2\n")
    with pytest.raises(InputError, match="agents.yaml: not valid YAML"):
        load_params(tmp_path)
    with pytest.raises(InputError, match="missing.yaml: parameter file not found"):
        load_params(REPO / "params", [tmp_path / "missing.yaml"])


def test_hparams_stage_shows_declarations_and_sources(capsys, tmp_path):
    from stages import hparams as stage

    assert stage.main(["--agent", "icarl", "--params-dir", str(REPO / "params")]) == 0
    out = capsys.readouterr().out
    assert "memory_size (int, default 1200, >= 0) [exemplar images in total]" in out
    assert "n_workers" in out and "execution-only" in out
    assert stage.main(["--agent", "augmem", "--dataset", "core50", "--scenario", "class_instance",
                       "--params-dir", str(REPO / "params")]) == 0
    out = capsys.readouterr().out
    assert "lr" in out and "<- params/agents.yaml: agents.augmem.overrides[0]" in out
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump({"hparam_overrides": {"augmem": {"memory_Nslots": 0}}}))
    with pytest.raises(SystemExit, match=r"^error: agent augmem \(AugMem\): memory_Nslots = 0 \(from config: "):
        stage.main(["--agent", "augmem", "--dataset", "core50", "--scenario", "class_iid",
                    "--params-dir", str(REPO / "params"), "--config", str(cfg)])


def test_override_rules_can_name_a_fidelity(params):
    """A rule with `fidelity` applies to that fidelity's jobs only (the external baselines' own network in
    reference, the study's in corrected); an unknown fidelity, in a rule or asked for, is an error."""
    import copy

    p = copy.deepcopy(params)
    p["agents"]["agents"]["l2"]["overrides"] = [
        {"fidelity": "corrected", "hp": {"lr": 0.5}},
        {"fidelity": "reference", "family": "core50", "hp": {"reg_coef": 7.0}},
    ]
    ref = resolve_job(p, "core50", "l2", "class_iid", fidelity="reference")
    cor = resolve_job(p, "core50", "l2", "class_iid", fidelity="corrected")
    assert (ref.hp["lr"], ref.hp["reg_coef"]) == (1e-4, 7.0)
    assert (cor.hp["lr"], cor.hp["reg_coef"]) == (0.5, 100.0)
    assert cor.sources["lr"] == "params/agents.yaml: agents.l2.overrides[0]"
    assert resolve_job(p, "core50", "l2", "class_iid").hp == ref.hp  # reference is the default
    with pytest.raises(InputError, match="unknown fidelity 'fixed'"):
        resolve_job(p, "core50", "l2", "class_iid", fidelity="fixed")
    p["agents"]["agents"]["l2"]["overrides"].append({"fidelity": "corected", "hp": {"lr": 0.1}})
    with pytest.raises(InputError, match=r"overrides\[2\]: unknown fidelity 'corected'"):
        resolve_job(p, "core50", "l2", "class_iid", fidelity="corrected")


def test_dataset_agent_hp_rules_by_fidelity(params):
    """datasets.D.agent_hp.A may be a list of {fidelity?, hp} rules (the demo gives an own random-init network its
    own lr in reference only); a malformed rule is an error naming it."""
    import copy

    p = copy.deepcopy(params)
    p["datasets"]["core50_demo"]["agent_hp"]["l2"] = [{"hp": {"reg_coef": 3.0}},
                                                      {"fidelity": "reference", "hp": {"lr": 0.1}}]
    ref = resolve_job(p, "core50_demo", "l2", "class_iid", fidelity="reference")
    cor = resolve_job(p, "core50_demo", "l2", "class_iid", fidelity="corrected")
    assert (ref.hp["lr"], ref.hp["reg_coef"]) == (0.1, 3.0) and (cor.hp["lr"], cor.hp["reg_coef"]) == (3e-4, 3.0)
    assert ref.sources["lr"] == "datasets: core50_demo.agent_hp.l2[1]"
    p["datasets"]["core50_demo"]["agent_hp"]["l2"] = [{"lr": 0.1}]
    with pytest.raises(InputError, match=r"agent_hp.l2\[0\]: expected"):
        resolve_job(p, "core50_demo", "l2", "class_iid")
