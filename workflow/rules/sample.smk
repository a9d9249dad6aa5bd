rule sample:
    input:
        tasks=PLAN.tasks_file,
        model=model_inputs,
        adapter=sample_adapter,
    output:
        f"{STORE}/samples/{{skey}}/s{{seed}}/{{task}}.parquet",
    params:
        settings=sampling_settings,
        policy=sample_policy,
        model=PLAN.model_path,
        adapter=lambda w: " ".join(sample_adapter(w)),
    log:
        f"{STORE}/samples/{{skey}}/s{{seed}}/{{task}}.log",
    benchmark:
        f"{STORE}/samples/{{skey}}/s{{seed}}/{{task}}.benchmark.tsv"
    threads: config["sampling"]["threads"]
    resources:
        mem_mb=6000,
    shell:
        "vegtts sample --tasks {input.tasks} --task {wildcards.task} --seed {wildcards.seed}"
        " --policy {params.policy} --model {params.model:q} --settings {params.settings:q}"
        " --threads {threads} --adapter={params.adapter:q} --out {output} > {log} 2>&1"
