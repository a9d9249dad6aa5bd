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
    log:
        f"{STORE}/evaluations/{{skey}}/{{ekey}}/s{{seed}}/{{task}}.{{tkey}}.log",
    benchmark:
        benchmark_file(
            f"{STORE}/evaluations/{{skey}}/{{ekey}}/s{{seed}}/{{task}}.{{tkey}}.parquet"
        )
    conda:
        "../envs/evaluate.yaml"
    threads: all_cores()
    resources:
        mem_mb=8000,
        evaluation_runtime=EVALUATION_RUNTIME,
        eval_cache=f"{STORE}/evalcache",
    params:
        settings=evaluation_settings,
    shell:
        "vegtts --log {log} evaluate --tasks {input.tasks} --task {wildcards.task} --samples {input.samples}"
        " --settings {params.settings:q} --runtime {resources.evaluation_runtime:q} --cache {resources.eval_cache:q}"
        " --workers {threads} --out {output}"
