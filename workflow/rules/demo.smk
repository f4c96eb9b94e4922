# The embedded demo: deterministic synthetic raw datasets in exactly the real on-disk layouts.


rule demo_data:
    """Generate a demo dataset's raw files (videos, images) in the real layout of its kind."""
    output:
        directory("data/raw/{dataset}"),
    wildcard_constraints:
        dataset=_alternatives(d for d in DATASETS if DATASETS[d].get("demo")),
    params:
        kind=lambda w: kind(w.dataset),
        seed=config["demo"]["seed"],
    threads: 2
    log:
        "logs/demo_data/{dataset}.log",
    shell:
        "python -m stages.demo_data --kind {params.kind} --out {output} --seed {params.seed} --jobs {threads} > {log} 2>&1"
