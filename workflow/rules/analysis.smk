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
    "correct_programs.csv",
    "rejections.csv",
    "outcomes.csv",
]


def store_keys(ttt=False):
    """Store keys of the analysed artifacts, written into every table's header."""
    keys = {"tasks": dict(sorted(PLAN.task_keys.items())), "samples": PLAN.base_sample_key, "evaluations": PLAN.base_eval_key}
    if ttt and PLAN.ttt is not None:
        keys["ttt_checkpoints"] = sorted(PLAN.ttt.checkpoints)
        keys["probe"] = PLAN.ttt.probe_key
    return as_json(keys)


rule analyze:
    input:
        samples=PLAN.base_sample_files(),
        evaluations=PLAN.base_eval_files(),
        tasks=PLAN.task_files(),
    output:
        tables=[f"{EXP}/tables/{name}" for name in ANALYSIS_TABLES],
        merged=f"{EXP}/tables/samples_evaluated.parquet",
    params:
        settings=as_json({**config["analysis"], "seed": config["seed"], "k": config["sampling"]["k"]}),
        config_hash=BASE_CONFIG_HASH,
        store_keys=store_keys(),
        code=stage_code("analysis"),
        out=f"{EXP}/tables",
    log:
        f"{EXP}/logs/analyze.log",
    shell:
        "vegtts --log {log} analyze --samples {input.samples} --evaluations {input.evaluations} --tasks {input.tasks}"
        " --settings {params.settings:q} --config-hash {params.config_hash} --config-hash-scope all-but-ttt"
        " --store-keys {params.store_keys:q}"
        " --out {params.out}"
