# Balanced sampling (spec 2.2 Toybox, 2.4 iLab); the balancing constants are per-dataset params.


rule sample_toybox:
    input:
        "data/interim/{dataset}/dirmap_raw.csv",
    output:
        "data/interim/{dataset}/dirmap_balanced.csv",
    wildcard_constraints:
        dataset=_alternatives(datasets_of_kind("toybox")),
    params:
        b=lambda w: DATASETS[w.dataset]["balance"],
    log:
        "logs/sample/{dataset}.log",
    conda:
        "../envs/augmem.yaml"
    shell:
        "python -m stages.sample --kind toybox --dirmap {input} --out {output}"
        " --objects-per-class {params.b[objects_per_class]} --sessions-per-object {params.b[sessions_per_object]}"
        " --frames-per-session {params.b[frames_per_session]} > {log} 2>&1"


rule sample_ilab:
    input:
        "data/interim/{dataset}/dirmap_raw.csv",
    output:
        "data/interim/{dataset}/dirmap_massed.csv",
    wildcard_constraints:
        dataset=_alternatives(datasets_of_kind("ilab2mlight")),
    params:
        b=lambda w: DATASETS[w.dataset]["balance"],
    log:
        "logs/sample/{dataset}.log",
    conda:
        "../envs/augmem.yaml"
    shell:
        "python -m stages.sample --kind ilab2mlight --dirmap {input} --out {output}"
        " --objects-per-class {params.b[objects_per_class]} --sessions-per-object {params.b[sessions_per_object]}"
        " --frames-per-session {params.b[frames_per_session]} --seed {params.b[seed]} > {log} 2>&1"
