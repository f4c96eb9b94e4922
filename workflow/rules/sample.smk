# Balanced sampling (spec 2.2 Toybox, 2.4 iLab): the datasets whose layout has a balancing step
# (augmem.data.layouts.BALANCING); the balancing constants are per-dataset params (`balance`).


rule sample_toybox:
    priority: 50  # on the demo's critical path: the demo weights gate most training jobs
    input:
        "data/interim/{dataset}/dirmap_raw.csv",
    output:
        f"data/interim/{{dataset}}/{layouts.BALANCING['toybox'].output}",
    wildcard_constraints:
        dataset=_alternatives(datasets_where(lambda lay: lay.balance == "toybox")),
    params:
        layout=lambda w: layout(w.dataset).name,
        b=lambda w: DATASETS[w.dataset]["balance"],
    log:
        "logs/sample/{dataset}.log",
    conda:
        "../envs/augmem.yaml"
    shell:
        "python -m stages.sample --layout {params.layout:q} --dirmap {input:q} --out {output:q}"
        " --objects-per-class {params.b[objects_per_class]:q} --sessions-per-object {params.b[sessions_per_object]:q}"
        " --frames-per-session {params.b[frames_per_session]:q} > {log:q} 2>&1"


rule sample_ilab:
    input:
        "data/interim/{dataset}/dirmap_raw.csv",
    output:
        f"data/interim/{{dataset}}/{layouts.BALANCING['ilab'].output}",
    wildcard_constraints:
        dataset=_alternatives(datasets_where(lambda lay: lay.balance == "ilab")),
    params:
        layout=lambda w: layout(w.dataset).name,
        b=lambda w: {"seed": 0, **DATASETS[w.dataset]["balance"]},
    log:
        "logs/sample/{dataset}.log",
    conda:
        "../envs/augmem.yaml"
    shell:
        "python -m stages.sample --layout {params.layout:q} --dirmap {input:q} --out {output:q}"
        " --objects-per-class {params.b[objects_per_class]:q} --sessions-per-object {params.b[sessions_per_object]:q}"
        " --frames-per-session {params.b[frames_per_session]:q} --seed {params.b[seed]:q} > {log:q} 2>&1"
