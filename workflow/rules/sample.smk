rule sample:
    input:
        tasks=f"{STORE}/tasks/{{tkey}}/tasks.json",
        adapter=sample_adapter,
    output:
        f"{STORE}/samples/{{skey}}/s{{seed}}/{{task}}.{{tkey}}.parquet",
    params:
        settings=sampling_settings,
        policy=sample_policy,
        adapter=lambda w: " ".join(sample_adapter(w)),
    log:
        f"{STORE}/samples/{{skey}}/s{{seed}}/{{task}}.{{tkey}}.log",
    benchmark:
        f"{STORE}/samples/{{skey}}/s{{seed}}/{{task}}.{{tkey}}.benchmark.tsv"
    threads: config["sampling"]["threads"]
    resources:
        mem_mb=6000,
    shell:
        "vegtts --log {log} sample --tasks {input.tasks} --task {wildcards.task} --seed {wildcards.seed}"
        " --policy {params.policy} --model {MODEL_PATH:q} --settings {params.settings:q}"
        " --runtime {SAMPLING_RUNTIME:q} --threads {threads} --adapter={params.adapter:q} --out {output}"
