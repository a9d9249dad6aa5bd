# Evaluation takes every core it is given: correctness checks run in parallel and timing must
# not share cores with other work. A machine-wide lock also serialises timing across jobs.
# The machine's hardware is not in the key (every node plans the same jobs); it is resolved by the
# job, stored in its records and in the per-candidate cache key (vegtts.evaluate.cache).
rule evaluate:
    input:
        tasks=f"{STORE}/tasks/{{tkey}}/tasks.json",
        samples=f"{STORE}/samples/{{skey}}/s{{seed}}/{{task}}.{{tkey}}.parquet",
    output:
        f"{STORE}/evaluations/{{skey}}/{{ekey}}/s{{seed}}/{{task}}.{{tkey}}.parquet",
    params:
        settings=evaluation_settings,
    log:
        f"{STORE}/evaluations/{{skey}}/{{ekey}}/s{{seed}}/{{task}}.{{tkey}}.log",
    benchmark:
        f"{STORE}/evaluations/{{skey}}/{{ekey}}/s{{seed}}/{{task}}.{{tkey}}.benchmark.tsv"
    threads: all_cores()
    resources:
        mem_mb=8000,
    shell:
        "vegtts --log {log} evaluate --tasks {input.tasks} --task {wildcards.task} --samples {input.samples}"
        " --settings {params.settings:q} --runtime {EVALUATION_RUNTIME:q} --cache {STORE}/evalcache"
        " --workers {threads} --out {output}"
