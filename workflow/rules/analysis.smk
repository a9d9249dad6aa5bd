ANALYSIS_TABLES = [
    "sample_stats.csv",
    "selection.csv",
    "selection_per_task.csv",
    "scaling.csv",
    "signal.csv",
    "comparisons.csv",
    "correlations.csv",
    "surprisal_quartiles.csv",
    "logprob_spread.csv",
    "scaling_summary.csv",
    "equivalent_k.csv",
    "correct_samples.csv",
]


rule analyze:
    input:
        samples=PLAN.base_sample_files(),
        evaluations=PLAN.base_eval_files(),
    output:
        tables=[f"{EXP}/tables/{name}" for name in ANALYSIS_TABLES],
        merged=f"{EXP}/tables/samples_evaluated.parquet",
    params:
        settings=as_json({**config["analysis"], "seed": config["seed"], "k": config["sampling"]["k"]}),
        config_hash=PLAN.base_sample_key + "-" + PLAN.base_eval_key,
        code=stage_code("analysis"),
        out=f"{EXP}/tables",
    log:
        f"{EXP}/logs/analyze.log",
    shell:
        "vegtts --log {log} analyze --samples {input.samples} --evaluations {input.evaluations}"
        " --settings {params.settings:q} --config-hash {params.config_hash} --out {params.out}"
