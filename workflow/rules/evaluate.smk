# Evaluation takes every core it is given: correctness checks run in parallel and timing must
# not share cores with other work. A machine-wide lock also serialises timing across jobs.
rule evaluate:
    input:
        tasks=PLAN.tasks_file,
        samples=f"{STORE}/samples/{{skey}}/s{{seed}}/{{task}}.parquet",
    output:
        f"{STORE}/evaluations/{{skey}}/{{ekey}}/s{{seed}}/{{task}}.parquet",
    params:
        settings=evaluation_settings,
        cache=f"{STORE}/evalcache",
    log:
        f"{STORE}/evaluations/{{skey}}/{{ekey}}/s{{seed}}/{{task}}.log",
    benchmark:
        f"{STORE}/evaluations/{{skey}}/{{ekey}}/s{{seed}}/{{task}}.benchmark.tsv"
    threads: all_cores()
    resources:
        mem_mb=8000,
    shell:
        "vegtts evaluate --tasks {input.tasks} --task {wildcards.task} --samples {input.samples}"
        " --settings {params.settings:q} --cache {params.cache} --workers {threads}"
        " --out {output} > {log} 2>&1"
