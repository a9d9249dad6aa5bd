# One resolved task per key; the key covers the content of its problem file (vegtts.identity).
rule resolve_task:
    output:
        f"{STORE}/tasks/{{tkey}}/tasks.json",
    params:
        task=resolved_task,
    log:
        f"{STORE}/tasks/{{tkey}}/resolve.log",
    shell:
        "vegtts --log {log} tasks resolve --suite {TASK_SUITE:q} --task {params.task} --key {wildcards.tkey}"
        " --out {output}"
