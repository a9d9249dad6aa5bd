rule report:
    input:
        tables=rules.analyze.output.tables,
        figures=rules.figures.output.png,
        samples=PLAN.base_sample_files(),
        evaluations=PLAN.base_eval_files(),
        ttt=ttt_report_inputs,
        ttt_artifacts=PLAN.ttt_files(),
    output:
        report(PLAN.report_file, caption="../report/report.rst", category="Report"),
    params:
        config_key=CONFIG_KEY,
        tables=f"{EXP}/tables",
        figures=f"{EXP}/figures",
        code=stage_code("report"),
        ttt="--ttt" if PLAN.ttt else "",
    log:
        f"{EXP}/logs/report.log",
    shell:
        "vegtts --log {log} report --tables {params.tables} --figures {params.figures}"
        " --config {CONFIG_JSON:q} --timings {input.samples} {input.evaluations}"
        " --ttt-timings {input.ttt_artifacts} {params.ttt}"
        " --out {output}"
