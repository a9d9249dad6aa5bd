rule sample:
    input:
        tasks=f"{STORE}/tasks/{{tkey}}/tasks.json",
        adapter=sample_adapter,
    output:
        f"{STORE}/samples/{{skey}}/s{{seed}}/{{task}}.{{tkey}}.parquet",
    log:
        f"{STORE}/samples/{{skey}}/s{{seed}}/{{task}}.{{tkey}}.log",
    benchmark:
        benchmark_file(f"{STORE}/samples/{{skey}}/s{{seed}}/{{task}}.{{tkey}}.parquet")
    conda:
        "../envs/sampling.yaml"
    threads: config["sampling"]["threads"]
    resources:
        mem_mb=6000,
        model_path=MODEL_PATH,
        sampling_runtime=SAMPLING_RUNTIME,
    params:
        settings=sampling_settings,
        policy=sample_policy,
        adapter=lambda w: " ".join(sample_adapter(w)),
    shell:
        "vegtts --log {log} sample --tasks {input.tasks} --task {wildcards.task} --seed {wildcards.seed}"
        " --policy {params.policy} --model {resources.model_path:q} --settings {params.settings:q}"
        " --runtime {resources.sampling_runtime:q} --threads {threads} --adapter={params.adapter:q} --out {output}"
