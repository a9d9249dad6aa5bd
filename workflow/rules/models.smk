rule prepare_model:
    output:
        f"{config['resources_dir']}/models/gemma3-270m-gguf/vegtts_model.json",
    log:
        f"{config['resources_dir']}/models/gemma3-270m-gguf.prepare.log",
    threads: 2
    resources:
        mem_mb=8000,
    shell:
        "vegtts model prepare --out $(dirname {output}) > {log} 2>&1"
