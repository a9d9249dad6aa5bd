# Prepares the default model on its own (`snakemake prepare_model`). Workflow jobs do not depend on
# it: the first job that loads the model prepares it (vegtts.models.ensure_model), so the folder it
# lives in (resources_dir) is never part of a job's inputs or identity.
rule prepare_model:
    output:
        f"{config['resources_dir']}/models/gemma3-270m-gguf/vegtts_model.json",
    log:
        f"{config['resources_dir']}/models/gemma3-270m-gguf.prepare.log",
    conda:
        "../envs/sampling.yaml"
    threads: 2
    resources:
        mem_mb=8000,
    shell:
        "vegtts --log {log} model prepare --out $(dirname {output})"
