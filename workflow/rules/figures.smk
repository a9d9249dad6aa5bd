FIGURES = ["teaser", "scaling", "selection", "surprisal_quartiles", "length_speedup", "rule_wins"]


rule figures:
    input:
        rules.analyze.output.tables,
    output:
        png=[
            report(
                f"{EXP}/figures/{name}.png",
                caption=f"../report/{name}.rst",
                category="Figures",
            )
            for name in FIGURES
        ],
        pdf=[f"{EXP}/figures/{name}.pdf" for name in FIGURES],
    params:
        tables=f"{EXP}/tables",
        out=f"{EXP}/figures",
        code=stage_code("figures"),
    log:
        f"{EXP}/logs/figures.log",
    shell:
        "vegtts --log {log} figures --tables {params.tables} --out {params.out}"
