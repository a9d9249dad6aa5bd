# Test-time training: per TTT seed and step, one LoRA update on the previous step's evaluated
# train batch; every checkpoint is then sampled (train + heldout batch) and evaluated by the
# ordinary sample/evaluate rules (its samples live under their own key in the store), and the
# probe scores the fixed base samples under it. Keys: vegtts.plan.build_ttt_plan.
TTT = PLAN.ttt

wildcard_constraints:
    ckey="[0-9a-f]{12}",
    pkey="[0-9a-f]{12}",

TTT_TABLES = ["ttt_trajectory.csv", "ttt_per_task.csv", "ttt_selection.csv", "ttt_probe.csv",
              "ttt_compute.csv", "ttt_equal_budget.csv", "ttt_bon_curve.csv"]
TTT_FIGURES = ["ttt_trajectory", "ttt_rho"]


def ttt_step_of(wildcards):
    if TTT is None or wildcards.ckey not in TTT.checkpoints:
        raise WorkflowError(f"unknown TTT checkpoint {wildcards.ckey}")
    return TTT.checkpoints[wildcards.ckey]


def ttt_update_inputs(wildcards):
    step = ttt_step_of(wildcards)
    prev = TTT.steps[(step.seed, step.step - 1)]
    samples, evals = PLAN.ttt_batch_files(prev, "train", step.train_tasks)
    inputs = {"samples": samples, "evaluations": evals}
    if step.previous_key:
        inputs["previous"] = TTT.checkpoint_dir(STORE, step.previous_key)
    return inputs


def ttt_previous_arg(wildcards):
    step = ttt_step_of(wildcards)
    return TTT.checkpoint_dir(STORE, step.previous_key) if step.previous_key else ""


def ttt_update_settings(wildcards):
    from vegtts.plan import ttt_training_settings

    return as_json(ttt_training_settings(config["ttt"], ttt_step_of(wildcards).seed))


def ttt_report_inputs(wildcards):
    if TTT is None:
        return []
    return [f"{EXP}/tables/{name}" for name in TTT_TABLES] + [f"{EXP}/figures/{name}.png" for name in TTT_FIGURES]


rule ttt_update:
    input:
        unpack(ttt_update_inputs),
    output:
        directory(f"{STORE}/ttt/{{ckey}}/adapter"),
    params:
        settings=ttt_update_settings,
        previous=ttt_previous_arg,
        step=lambda w: ttt_step_of(w).step,
    log:
        f"{STORE}/ttt/{{ckey}}/update.log",
    benchmark:
        f"{STORE}/ttt/{{ckey}}/update.benchmark.tsv"
    threads: config["sampling"]["threads"]
    resources:
        mem_mb=8000,
    shell:
        "vegtts --log {log} ttt update --samples {input.samples} --evaluations {input.evaluations}"
        " --model {MODEL_PATH:q} --previous={params.previous:q} --step {params.step} --settings {params.settings:q}"
        " --threads {threads} --out {output}"


rule ttt_score:
    input:
        adapter=f"{STORE}/ttt/{{ckey}}/adapter",
        samples=lambda w: [PLAN.sample_file(PLAN.base_sample_key, TTT.probe_seed, t) for t in TTT.task_ids],
    output:
        f"{STORE}/scores/{{pkey}}/{{ckey}}.parquet",
    params:
        scorer=lambda w: ttt_step_of(w).policy,
        micro_batch=config["ttt"]["score_micro_batch"],
    log:
        f"{STORE}/scores/{{pkey}}/{{ckey}}.log",
    benchmark:
        f"{STORE}/scores/{{pkey}}/{{ckey}}.benchmark.tsv"
    threads: config["sampling"]["threads"]
    resources:
        mem_mb=6000,
    shell:
        "vegtts --log {log} ttt score --samples {input.samples} --model {MODEL_PATH:q} --adapter {input.adapter}"
        " --scorer {params.scorer} --micro-batch {params.micro_batch} --threads {threads}"
        " --out {output}"


rule ttt_analyze:
    input:
        PLAN.ttt_files(),
    output:
        [f"{EXP}/tables/{name}" for name in TTT_TABLES],
    params:
        config_hash=CONFIG_HASH,
        store_keys=lambda w: store_keys(ttt=True),
        out=f"{EXP}/tables",
        code=stage_code("analysis"),
    log:
        f"{EXP}/logs/ttt_analyze.log",
    shell:
        "vegtts --log {log} ttt analyze --config {CONFIG_JSON:q} --config-hash {params.config_hash} --config-hash-scope all"
        " --store-keys {params.store_keys:q} --out {params.out}"


rule ttt_figures:
    input:
        rules.ttt_analyze.output,
    output:
        png=[f"{EXP}/figures/{name}.png" for name in TTT_FIGURES],
        pdf=[f"{EXP}/figures/{name}.pdf" for name in TTT_FIGURES],
    params:
        tables=f"{EXP}/tables",
        out=f"{EXP}/figures",
        code=stage_code("figures"),
    log:
        f"{EXP}/logs/ttt_figures.log",
    shell:
        "vegtts --log {log} ttt figures --tables {params.tables} --out {params.out}"
