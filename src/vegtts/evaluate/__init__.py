"""The evaluator: runs untrusted candidate programs in sandboxed children, checks and times them.

Public API:
    EvalSettings                      settings (``EvalSettings.from_dict`` rejects unknown keys)
    evaluate_task(spec, candidates, settings, cache_dir) -> list[EvalRecord]
    evaluate_samples_file(samples_parquet, task, settings_dict, cache_dir, out_parquet)
"""

from vegtts.evaluate.devices import evaluate_task
from vegtts.evaluate.samples import evaluate_samples_file
from vegtts.evaluate.settings import EvalSettings

__all__ = ["EvalSettings", "evaluate_task", "evaluate_samples_file"]
