# Dataset indexes ("dirmaps", spec 2.1, 2.3, 2.7 and 12.8) and their statistics check (spec 2.6).


rule dirmap:
    """Index every image: class, object, session, im_num, im_path (the raw, unbalanced index)."""
    input:
        unpack(_dirmap_inputs),
    output:
        dirmap="data/interim/{dataset}/dirmap_raw.csv",
    wildcard_constraints:
        dataset=_alternatives(datasets_of_kind("core50", "toybox", "ilab2mlight")),
    params:
        kind=lambda w: kind(w.dataset),
        # Toybox: the category -> class and transformation -> session maps shipped in params/ (declared inputs)
        extra=lambda w, input: (["--toybox-classes", input.classes, "--toybox-sessions", input.sessions]
                                if kind(w.dataset) == "toybox" else []),
    log:
        "logs/dirmap/{dataset}.log",
    conda:
        "../envs/augmem.yaml"
    shell:
        "python -m stages.dirmap --kind {params.kind:q} --root {input.src:q} --out {output.dirmap:q} {params.extra:q}"
        " > {log:q} 2>&1"


use rule dirmap as dirmap_cifar100 with:
    output:
        dirmap="data/interim/{dataset}/dirmap_raw.csv",
        classes="data/interim/{dataset}/classes.csv",  # the class table (class name, label)
    wildcard_constraints:
        dataset=_alternatives(datasets_of_kind("cifar100")),
    params:
        kind="cifar100",
        extra=lambda w, output: ["--classes-out", output.classes],


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
        "python -m stages.dirmap_stats --dirmap {input:q} --out {output:q} --frames-per-session {params.fps:q}"
        " --expect {params.expect:q} > {log:q} 2>&1"
