# Test-time training: per TTT seed and step, one LoRA update on the previous step's evaluated
# train batch; every checkpoint is then sampled (train + heldout batch) and evaluated by the
# ordinary sample/evaluate rules (its samples live under their own key in the store), and the
# probe scores the fixed base samples under it. Keys: vegtts.plan.build_ttt_plan; the functions
# these rules call are in common.smk.


wildcard_constraints:
    ckey="[0-9a-f]{12}",
    pkey="[0-9a-f]{12}",


rule ttt_update:
    input:
        unpack(ttt_update_inputs),
    output:
        directory(f"{STORE}/ttt/{{ckey}}/adapter"),
    log:
        f"{STORE}/ttt/{{ckey}}/update.log",
    benchmark:
        TTTPlan.update_benchmark(STORE, "{ckey}")
    conda:
        "../envs/ttt.yaml"
    threads: config["sampling"]["threads"]
    resources:
        mem_mb=8000,
        model_path=MODEL_PATH,
    params:
        settings=ttt_update_settings,
        previous=ttt_previous_arg,
        step=lambda w: ttt_step_of(w).step,
    shell:
        "vegtts --log {log} ttt update --samples {input.samples} --evaluations {input.evaluations}"
        " --model {resources.model_path:q} --previous={params.previous:q} --step {params.step} --settings {params.settings:q}"
        " --threads {threads} --out {output}"


rule ttt_score:
    input:
        adapter=f"{STORE}/ttt/{{ckey}}/adapter",
        samples=ttt_probe_samples,
    output:
        f"{STORE}/scores/{{pkey}}/{{ckey}}.parquet",
    log:
        f"{STORE}/scores/{{pkey}}/{{ckey}}.log",
    benchmark:
        benchmark_file(f"{STORE}/scores/{{pkey}}/{{ckey}}.parquet")
    conda:
        "../envs/ttt.yaml"
    threads: config["sampling"]["threads"]
    resources:
        mem_mb=6000,
        model_path=MODEL_PATH,
    params:
        scorer=lambda w: ttt_step_of(w).policy,
        micro_batch=config["ttt"]["score_micro_batch"],
    shell:
        "vegtts --log {log} ttt score --samples {input.samples} --model {resources.model_path:q} --adapter {input.adapter}"
        " --scorer {params.scorer} --micro-batch {params.micro_batch} --threads {threads}"
        " --out {output}"


# What the TTT analysis reads, by seed, step and batch (vegtts.plan.Plan.ttt_manifest), as a file:
# the analysis takes it instead of planning again.
rule ttt_manifest:
    output:
        f"{EXP}/ttt_manifest.json",
    log:
        f"{EXP}/logs/ttt_manifest.log",
    localrule: True
    params:
        manifest=as_json(PLAN.ttt_manifest()) if PLAN.ttt else "",
    run:
        write_text(output[0], params.manifest)
        write_text(
            log[0], f"wrote {output[0]}: {len(PLAN.ttt_files())} TTT artifacts\n"
        )


rule ttt_analyze:
    input:
        manifest=rules.ttt_manifest.output,
        artifacts=PLAN.ttt_files(),
        base_samples=PLAN.base_sample_files(),
        base_evaluations=PLAN.base_eval_files(),
    output:
        [
            report(
                f, caption="../report/ttt_tables.rst", category="Test-time training"
            )
            for f in table_files(TABLES, TTT_TABLES.values())
        ],
    log:
        f"{EXP}/logs/ttt_analyze.log",
    conda:
        "../envs/analysis.yaml"
    params:
        settings=as_json(
            {
                "variant": config["analysis"]["primary_variant"],
                "bootstrap": config["analysis"]["bootstrap"],
                "seed": config["seed"],
            }
        ),
        config_hash=CONFIG_HASH,
        store_keys=lambda w: store_keys(ttt=True),
        code=stage_code("analysis"),
    shell:
        "vegtts --log {log} ttt analyze --manifest {input.manifest} --settings {params.settings:q}"
        " --config-hash {params.config_hash} --config-hash-scope all --store-keys {params.store_keys:q} --out {output}"


rule ttt_figures:
    input:
        rules.ttt_analyze.output,
    output:
        png=[
            report(
                f"{FIGURES_DIR}/{name}.png",
                caption=f"../report/{name}.rst",
                category="Test-time training",
            )
            for name in TTT_FIGURES
        ],
        pdf=figure_files(FIGURES_DIR, TTT_FIGURES, "pdf"),
    log:
        f"{EXP}/logs/ttt_figures.log",
    conda:
        "../envs/analysis.yaml"
    params:
        code=stage_code("figures"),
    shell:
        "vegtts --log {log} ttt figures --tables {input} --out {output}"
