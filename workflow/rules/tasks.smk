# One resolved task per key; the key covers the content of its problem file (vegtts.identity).
rule resolve_task:
    output:
        f"{STORE}/tasks/{{tkey}}/tasks.json",
    log:
        f"{STORE}/tasks/{{tkey}}/resolve.log",
    conda:
        "../envs/sampling.yaml"
    resources:
        task_suite=TASK_SUITE,
    params:
        task=resolved_task,
    shell:
        "vegtts --log {log} tasks resolve --suite {resources.task_suite:q} --task {params.task} --key {wildcards.tkey}"
        " --out {output}"
