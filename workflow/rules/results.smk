# Aggregation of the per-run outputs into tables, the results table and the figures (spec 5.5, 10, 12.26).


rule aggregate:
    """Tidy per-run table, per-cell summary and per-task curves; fails when a requested run has no result."""
    input:
        metrics=train_outputs(),
        benchmarks=[m.replace("metrics.json", "benchmark.tsv") for m in train_outputs()],
        published="data/published",  # the published per-run CSVs (AAN, REMIND), imported as extra rows
    output:
        runs="results/tables/runs.csv",
        summary=report("results/tables/summary.csv", caption="../report/summary.rst", category="Tables"),
        per_task="results/tables/per_task.csv",
        dvc_metrics="results/metrics.json",
        dvc_plot="results/tables/per_task_plot.csv",
    params:
        run_filter=config["results"]["run_filter"],
        out_dir=lambda w, output: os.path.dirname(output.runs),  # runs, summary and per_task.csv go here
    log:
        "logs/results/aggregate.log",
    conda:
        "../envs/augmem.yaml"
    shell:
        "python -m stages.aggregate --metrics {input.metrics:q} --benchmarks {input.benchmarks:q}"
        " --published-dir {input.published:q} --run-filter {params.run_filter:q} --out-dir {params.out_dir:q}"
        " --metrics-out {output.dvc_metrics:q} --plot-out {output.dvc_plot:q} > {log:q} 2>&1"


rule results_table:
    """The study's results table: agents x (dataset, scenario), average accuracy mean +- SEM, best marked."""
    input:
        "results/tables/summary.csv",
    output:
        md="results/table.md",
        csv=report("results/table.csv", caption="../report/table.rst", category="Tables"),
        tex="results/table.tex",
    log:
        "logs/results/table.log",
    conda:
        "../envs/augmem.yaml"
    shell:
        "python -m stages.table --summary {input:q} --out-md {output.md:q} --out-csv {output.csv:q}"
        " --out-tex {output.tex:q} > {log:q} 2>&1"


rule figures:
    """Every figure of the study (accuracy curves, bar charts, ablations, memory, t-SNE, confusion, hypotheses)."""
    input:
        runs="results/tables/runs.csv",
        summary="results/tables/summary.csv",
        per_task="results/tables/per_task.csv",
        metrics=train_outputs(),  # each viz.npz's run identity comes from the metrics.json next to it
        viz=viz_outputs(),
    output:
        figures=report(directory("results/figures"), patterns=["{name}.png"], caption="../report/figures.rst",
                       category="Figures"),
    log:
        "logs/results/figures.log",
    conda:
        "../envs/augmem.yaml"
    shell:
        "python -m stages.figures --runs {input.runs:q} --summary {input.summary:q} --per-task {input.per_task:q}"
        " --viz {input.viz:q} --out-dir {output.figures:q} > {log:q} 2>&1"
