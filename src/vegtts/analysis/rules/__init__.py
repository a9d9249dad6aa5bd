"""Selection rules: each module registers its SelectionRule(s) in RULES; registration order is the
display order of tables and figures, so a new rule (a module here and its name in the import line
below, docs/extending.md) comes after the built-in ones."""

from vegtts.analysis.rules import builtin  # noqa: F401  (registers the paper's rules and their controls)
from vegtts.analysis.rules.base import NO_VARIANT, RULES, Pick, RankBy, SelectionRule, UnitSamples

__all__ = ["NO_VARIANT", "RULES", "Pick", "RankBy", "SelectionRule", "UnitSamples"]
