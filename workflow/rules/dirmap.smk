# Dataset indexes ("dirmaps", spec 2.1, 2.3, 2.7 and 12.8) and their statistics check (spec 2.6).


rule dirmap:
    """Index every image: class, object, session, im_num, im_path (the raw, unbalanced index)."""
    input:
        _dirmap_source,
    output:
        "data/interim/{dataset}/dirmap_raw.csv",
    params:
        kind=lambda w: kind(w.dataset),
        extra=lambda w: (["--classes-out", f"data/interim/{w.dataset}/classes.csv"]
                         if kind(w.dataset) == "cifar100" else []),
    log:
        "logs/dirmap/{dataset}.log",
    conda:
        "../envs/augmem.yaml"
    shell:
        "python -m stages.dirmap --kind {params.kind} --root {input} --out {output} {params.extra:q} > {log} 2>&1"


rule dirmap_stats:
    """Compute the dirmap statistics of spec 2.6 and assert them against params/datasets.yaml."""
    input:
        lambda w: final_dirmap(w.dataset),
    output:
        "data/interim/{dataset}/dirmap_stats.json",
    params:
        expect=lambda w: [f"{k}={v}" for k, v in (DATASETS[w.dataset].get("expected_stats") or {}).items()],
        fps=lambda w: DATASETS[w.dataset].get("balance", {}).get("frames_per_session", 15),
    log:
        "logs/dirmap_stats/{dataset}.log",
    conda:
        "../envs/augmem.yaml"
    shell:
        "python -m stages.dirmap_stats --dirmap {input} --out {output} --frames-per-session {params.fps}"
        " --expect {params.expect:q} > {log} 2>&1"
