# AugMem study as one DAG: raw data -> frames -> dirmap -> balanced dirmap -> (distributed images) -> task filelists
# -> per-run training -> aggregated table, figures and report.  `snakemake --cores all` builds the embedded demo;
# `snakemake --configfile params/paper.yaml ...` the paper's configuration on real data (README).
from snakemake.utils import min_version

min_version("9.0")


configfile: "params/default.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/frames.smk"
include: "workflow/rules/dirmap.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/distribute.smk"
include: "workflow/rules/filelists.smk"
include: "workflow/rules/cache.smk"
include: "workflow/rules/gridsearch_common.smk"
include: "workflow/rules/gridsearch.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/results.smk"


report: "workflow/report/workflow.rst"


onsuccess:
    # AugMem health: one WARNING line per results cell whose memory collapsed in some run (nothing otherwise); a
    # console summary only, so it never fails the workflow
    try:
        import sys

        from augmem.results.aggregate import collapse_warnings

        for line in collapse_warnings("results/tables/summary.csv"):
            print(line, file=sys.stderr)
    except Exception:
        pass


rule all:
    default_target: True
    input:
        all_outputs(),
        gridsearch_outputs(),


rule data:
    """Data preparation only: every dataset's checked dirmap and task filelists."""
    input:
        data_outputs(),
