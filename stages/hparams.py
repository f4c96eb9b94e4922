"""Show hyperparameters: an agent's declarations, or one job's resolved values and where each came from.

    python -m stages.hparams --agent augmem                                  # declared: type, default, range, unit
    python -m stages.hparams --agent augmem --dataset core50 --scenario class_instance [--config mine.yaml]

The second form runs the same resolution and validation as every training route (augmem.train.hparams.resolve_job)
and exits with the same one-line error when a value is unknown, of the wrong type or out of range.
"""
from __future__ import annotations

import argparse
import json
import sys

from augmem.io import InputError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stages.hparams", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--agent", required=True, help="agent name (a key of params/agents.yaml agents)")
    ap.add_argument("--dataset", help="dataset name: show the job's resolved values (needs --scenario)")
    ap.add_argument("--scenario", choices=["iid", "class_iid", "instance", "class_instance"])
    ap.add_argument("--params-dir", default="params")
    ap.add_argument("--config", action="append", default=[], metavar="FILE",
                    help="configuration file merged over <params-dir>/default.yaml (as snakemake --configfile)")
    ap.add_argument("--fidelity", default="reference", choices=("reference", "corrected"),
                    help="the job's fidelity (override rules may name one; default reference)")
    ap.add_argument("--json", action="store_true", help="print the resolved values as JSON")
    args = ap.parse_args(argv)
    if (args.dataset is None) != (args.scenario is None):
        ap.error("--dataset and --scenario go together")
    from augmem.agents import get_agent_class
    from augmem.agents.hparams import declared
    from augmem.train.hparams import load_params, resolve_job

    try:
        params = load_params(args.params_dir, args.config)
        agents = params["agents"].get("agents", {})
        if args.agent not in agents:
            raise InputError(f"unknown agent {args.agent!r}; params/agents.yaml defines {sorted(agents)}")
        impl = agents[args.agent]["impl"]
        decls = declared(get_agent_class(impl).HP)
        if args.dataset is None:
            print(f"{args.agent} ({impl}): {len(decls)} hyperparameters")
            for d in decls.values():
                print("  " + d.describe() + ("" if d.affects_results else " (execution-only: not in the fingerprint)"))
            return 0
        job = resolve_job(params, args.dataset, args.agent, args.scenario, fidelity=args.fidelity)
    except InputError as e:
        raise SystemExit(f"error: {e}")
    if args.json:
        print(json.dumps(job.hp, indent=2, sort_keys=True))
        return 0
    print(f"{args.agent} ({impl}) on {args.dataset} / {args.scenario} ({args.fidelity}):")
    width = max(len(k) for k in job.hp)
    for key, value in job.hp.items():
        unit = f" [{decls[key].unit}]" if decls[key].unit else ""
        print(f"  {key:<{width}} = {value!r}{unit}   <- {job.sources.get(key, 'declared default')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
