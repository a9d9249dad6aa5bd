rule analyze:
    input:
        samples=PLAN.base_sample_files(),
        evaluations=PLAN.base_eval_files(),
        tasks=PLAN.task_files(),
    output:
        tables=[
            report(f, caption="../report/tables.rst", category="Tables")
            for f in table_files(TABLES, ANALYSIS_TABLES.values())
        ],
        merged=f"{TABLES}/{MERGED_SAMPLES}",
    log:
        f"{EXP}/logs/analyze.log",
    conda:
        "../envs/analysis.yaml"
    params:
        settings=as_json(
            {
                **config["analysis"],
                "seed": config["seed"],
                "k": config["sampling"]["k"],
            }
        ),
        config_hash=BASE_CONFIG_HASH,
        store_keys=store_keys(),
        code=stage_code("analysis"),
    shell:
        "vegtts --log {log} analyze --samples {input.samples} --evaluations {input.evaluations} --tasks {input.tasks}"
        " --settings {params.settings:q} --config-hash {params.config_hash} --config-hash-scope all-but-ttt"
        " --store-keys {params.store_keys:q}"
        " --out {output}"
