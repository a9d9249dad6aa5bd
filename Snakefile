# vegtts: Best-of-N, test-time training and selection rules for execution-grounded code generation.
# Run:  snakemake --cores 2            (the embedded default experiment, config.yaml)
#       snakemake --cores 2 --configfile my.yaml
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/tasks.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/ttt.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/report.smk"


# The report, and every store artifact: a missing one (deleted, or moved aside as corrupt by the
# store check in common.smk) is regenerated, so "Nothing to be done" means the store is whole.
rule all:
    default_target: True
    input:
        PLAN.report_file,
        PLAN.store_artifacts(),
