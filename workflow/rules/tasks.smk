rule resolve_tasks:
    output:
        f"{STORE}/tasks/{{tkey}}/tasks.json",
    params:
        suite=lambda w: as_json({**config["tasks"], "ids": TASK_IDS}),
        code=stage_code("tasks"),
    log:
        f"{STORE}/tasks/{{tkey}}/resolve.log",
    shell:
        "vegtts tasks resolve --suite {params.suite:q} --out {output} > {log} 2>&1"
