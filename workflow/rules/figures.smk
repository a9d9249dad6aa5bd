rule figures:
    input:
        rules.analyze.output.tables,
    output:
        png=[
            report(
                f"{FIGURES_DIR}/{name}.png",
                caption=f"../report/{name}.rst",
                category="Figures",
            )
            for name in FIGURES
        ],
        pdf=figure_files(FIGURES_DIR, FIGURES, "pdf"),
    log:
        f"{EXP}/logs/figures.log",
    conda:
        "../envs/analysis.yaml"
    params:
        code=stage_code("figures"),
    shell:
        "vegtts --log {log} figures --tables {input} --out {output}"
