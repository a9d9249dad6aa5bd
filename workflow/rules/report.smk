rule report:
    input:
        tables=rules.analyze.output.tables,
        figures=rules.figures.output.png,
        ttt_tables=rules.ttt_analyze.output if PLAN.ttt else [],
        ttt_figures=rules.ttt_figures.output.png if PLAN.ttt else [],
    output:
        report(PLAN.report_file, caption="../report/report.rst", category="Report"),
    log:
        f"{EXP}/logs/report.log",
    conda:
        "../envs/analysis.yaml"
    resources:
        config_json=CONFIG_JSON,
    params:
        config_key=CONFIG_KEY,
        benchmarks=benchmark_args(),
        code=stage_code("report"),
        ttt="--ttt" if PLAN.ttt else "",
    shell:
        "vegtts --log {log} report --tables {input.tables} {input.ttt_tables} --figures {input.figures} {input.ttt_figures}"
        " --config {resources.config_json:q} {params.benchmarks} {params.ttt}"
        " --out {output}"
