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
        "python -m stages.sample --kind toybox --dirmap {input:q} --out {output:q}"
        " --objects-per-class {params.b[objects_per_class]:q} --sessions-per-object {params.b[sessions_per_object]:q}"
        " --frames-per-session {params.b[frames_per_session]:q} > {log:q} 2>&1"


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
        "python -m stages.sample --kind ilab2mlight --dirmap {input:q} --out {output:q}"
        " --objects-per-class {params.b[objects_per_class]:q} --sessions-per-object {params.b[sessions_per_object]:q}"
        " --frames-per-session {params.b[frames_per_session]:q} --seed {params.b[seed]:q} > {log:q} 2>&1"
