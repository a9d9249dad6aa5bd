"""Module constants of a problem file, their roles, and the shape settings that change them.

Source text and `ast` only (no torch): `load_tasks` applies these while Snakemake parses.

A KernelBench problem sizes its tensors with module-level constants that `get_inputs()` and
`get_init_inputs()` read when called, so assigning new values after the definitions changes
every shape consistently (reference, candidate, inputs).  Constants may be written as
expressions (`N = 2048 * 2`), tuples (`input_shape = (32768,)`), unpacked tuples
(`depth, height, width = (16, 32, 32)`), chains (`height = width = 128`) or be derived from
others (`bias_shape = (out_channels, 1, 1)`, `groups = in_channels`): all are evaluated, and a
derived constant is recomputed when a constant it reads changes.

Roles (inferred from how `get_inputs` and `get_init_inputs` use a constant):
  batch   the leading dimension of input tensors and nothing else (rows of independent work);
          `shape_scale` multiplies these, never below min(original, MIN_BATCH)
  size    any other tensor dimension drawn in get_inputs (matrix sizes, lengths, spatial and
          feature dims, the elements of a tuple shape), or a width passed to the model whose
          name says so (SIZE_NAME: channels, features, hidden, classes, ...)
  fixed   everything else: kernel sizes, strides, paddings, groups, reduction dims, floats
Derived constants have no role of their own: the constants they read carry it.
"""

from __future__ import annotations

import ast
import logging
import operator
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vegtts.io import sha256_text

log = logging.getLogger(__name__)

MIN_BATCH = 2  # train-mode batch norm needs more than one value per channel
MIN_SIZE = 8  # a reduced size dimension keeps at least this much work (or its original value)
SIZE_NAME = re.compile(r"channels|features|hidden|classes|input_size|output_size|embed|heads", re.IGNORECASE)
NOT_SIZE_NAME = re.compile(r"kernel|stride|pad|dilation|group|pool|dim$|^dim|eps|momentum", re.IGNORECASE)
# torch factories whose positional arguments (or one tuple argument, or size=) are a shape
_SHAPE_FACTORIES = {"rand", "randn", "zeros", "ones", "empty"}
_BINOPS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv,
    ast.Div: operator.truediv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_CALLS = {"int": int, "float": float, "min": min, "max": max, "abs": abs, "round": round, "tuple": tuple}


class NotConstant(ValueError):
    """An expression that is not a constant expression of literals and earlier constants."""


@dataclass(frozen=True)
class Constant:
    name: str
    value: Any
    expr: ast.expr | None  # the defining expression; None for a name unpacked from a literal tuple
    reads: frozenset[str]  # the earlier constants the expression reads (empty: a literal)

    @property
    def derived(self) -> bool:
        return bool(self.reads)

    @property
    def is_shape(self) -> bool:
        """An int, or a tuple/list of ints: what shape settings may change."""
        return _is_int(self.value) or (
            isinstance(self.value, (tuple, list)) and bool(self.value) and all(_is_int(v) for v in self.value)
        )


def _is_int(value: Any) -> bool:
    return type(value) is int


def evaluate(node: ast.expr, env: dict[str, Any]) -> Any:
    """Value of a constant expression over literals and the names in `env` (else NotConstant)."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in env:
            return env[node.id]
        raise NotConstant(node.id)
    if isinstance(node, (ast.Tuple, ast.List)):
        items = tuple(evaluate(e, env) for e in node.elts)
        return items if isinstance(node, ast.Tuple) else list(items)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = evaluate(node.operand, env)
        return -value if isinstance(node.op, ast.USub) else +value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = evaluate(node.left, env), evaluate(node.right, env)
        if isinstance(node.op, ast.Pow) and (not isinstance(right, (int, float)) or abs(right) > 64):
            raise NotConstant("power")
        try:
            return _BINOPS[type(node.op)](left, right)
        except Exception as exc:  # noqa: BLE001 - e.g. a tuple times a string
            raise NotConstant(str(exc)) from exc
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _CALLS and not node.keywords:
        try:
            return _CALLS[node.func.id](*(evaluate(a, env) for a in node.args))
        except NotConstant:
            raise
        except Exception as exc:  # noqa: BLE001
            raise NotConstant(str(exc)) from exc
    raise NotConstant(ast.unparse(node)[:80])


def _names_read(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def module_constants(tree: ast.Module) -> dict[str, Constant]:
    """Module-level constants in definition order (a later assignment replaces an earlier one)."""
    out: dict[str, Constant] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value_node = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value_node = [node.target], node.value
        else:
            continue
        env = {name: c.value for name, c in out.items()}
        try:
            value = evaluate(value_node, env)
        except NotConstant:
            value = None
        reads = frozenset(_names_read(value_node) & set(out))
        for target in targets:
            if isinstance(target, ast.Name):
                out.pop(target.id, None)
                if value is not None:
                    out[target.id] = Constant(target.id, value, value_node, reads)
            elif isinstance(target, (ast.Tuple, ast.List)) and all(isinstance(e, ast.Name) for e in target.elts):
                names = [e.id for e in target.elts]  # type: ignore[attr-defined]
                for name in names:
                    out.pop(name, None)
                if isinstance(value, (tuple, list)) and len(value) == len(names):
                    literal = isinstance(value_node, (ast.Tuple, ast.List)) and len(value_node.elts) == len(names)
                    for i, name in enumerate(names):
                        expr = value_node.elts[i] if literal else None  # type: ignore[attr-defined]
                        out[name] = Constant(name, value[i], expr, frozenset(_names_read(expr) & set(out)) if expr is not None else reads)
    return out


# ----------------------------------------------------------------------------- roles


def _function(tree: ast.Module, name: str) -> ast.FunctionDef | None:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    return None


def _call_name(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _shape_args(call: ast.Call) -> list[ast.expr] | None:
    """The expressions that make up the shape argument of a torch factory call, or None."""
    name = _call_name(call)
    size_kw = [k.value for k in call.keywords if k.arg == "size"]
    if name in _SHAPE_FACTORIES:
        args = list(call.args) if call.args else size_kw
    elif name == "randint":
        args = [call.args[2]] if len(call.args) >= 3 else ([call.args[1]] if len(call.args) == 2 else size_kw)
    elif name == "full":
        args = [call.args[0]] if call.args else size_kw
    else:
        return None
    if len(args) == 1 and isinstance(args[0], (ast.Tuple, ast.List)):
        args = list(args[0].elts)
    return args


def shape_uses(tree: ast.Module, constants: dict[str, Constant]) -> Iterator[tuple[str, int | None, int]]:
    """(constant, tuple element or None, dimension position) for each tensor dim in get_inputs.

    A derived constant's use is attributed to the constants it reads.
    """
    fn = _function(tree, "get_inputs")
    if fn is None:
        return
    for node in ast.walk(fn):
        if not isinstance(node, ast.Call):
            continue
        args = _shape_args(node)
        if args is None:
            continue
        pos = 0
        for arg in args:
            if isinstance(arg, ast.Starred) and isinstance(arg.value, ast.Name) and arg.value.id in constants:
                const = constants[arg.value.id]
                width = len(const.value) if isinstance(const.value, (tuple, list)) else 1
                if const.derived and isinstance(const.expr, (ast.Tuple, ast.List)):
                    for i, elt in enumerate(const.expr.elts):
                        for name in _root_constants(elt, constants):
                            yield name, None, pos + i
                elif const.derived:
                    for name in _root_constants(const.expr, constants):
                        yield name, None, pos
                else:
                    for i in range(width):
                        yield const.name, i, pos + i
                pos += width
                continue
            for name in _root_constants(arg, constants):
                yield name, None, pos
            pos += 1


def _root_constants(node: ast.AST | None, constants: dict[str, Constant]) -> set[str]:
    """The non-derived constants an expression reads, following derived constants."""
    if node is None:
        return set()
    out: set[str] = set()
    for name in _names_read(node):
        const = constants.get(name)
        if const is None:
            continue
        if const.derived:
            out |= _root_constants(const.expr, {k: v for k, v in constants.items() if k != name})
        else:
            out.add(name)
    return out


def infer_roles(source: str | ast.Module) -> dict[str, str]:
    """Role of every non-derived shape constant: "batch", "size" or "fixed" (module docstring)."""
    tree = ast.parse(source) if isinstance(source, str) else source
    constants = module_constants(tree)
    positions: dict[str, set[int]] = {}
    for name, _, pos in shape_uses(tree, constants):
        positions.setdefault(name, set()).add(pos)
    init_fn = _function(tree, "get_init_inputs")
    init_names = _root_constants(init_fn, constants)
    roles: dict[str, str] = {}
    for name, const in constants.items():
        if const.derived or not const.is_shape:
            continue
        used = positions.get(name)
        if used:
            roles[name] = "batch" if used == {0} and name not in init_names and _is_int(const.value) else "size"
        elif name in init_names and SIZE_NAME.search(name) and not NOT_SIZE_NAME.search(name):
            roles[name] = "size"
        else:
            roles[name] = "fixed"
    return roles


# ----------------------------------------------------------------------------- applying new values


def _check_new_value(name: str, old: Any, new: Any, where: str) -> Any:
    if _is_int(old):
        if not _is_int(new) or new < 1:
            raise ValueError(f"{where}: {name} is an int constant ({old}); give a positive int, got {new!r}")
        return new
    if isinstance(new, (list, tuple)) and len(new) == len(old) and all(_is_int(v) and v >= 1 for v in new):
        return type(old)(new)
    raise ValueError(f"{where}: {name} is the tuple constant {tuple(old)!r}; give a list of {len(old)} positive ints, got {new!r}")


def assign_constants(source: str, new_values: dict[str, Any], where: str, header: str) -> str:
    """`source` with constants set to `new_values` by appended assignments, derived ones recomputed.

    Only shape constants (ints, tuples of ints) that are not derived may be set; unknown names
    raise ValueError naming `where` and the allowed names.  Returns `source` itself if nothing
    changes.
    """
    if not new_values:
        return source
    constants = module_constants(ast.parse(source))
    settable = sorted(n for n, c in constants.items() if c.is_shape and not c.derived)
    unknown = sorted(set(new_values) - set(settable))
    if unknown:
        derived = [n for n in unknown if n in constants and constants[n].derived]
        hint = f" ({derived} are computed from other constants: set those instead)" if derived else ""
        raise ValueError(f"{where}: {unknown} are not module-level shape constants of the problem{hint}; allowed: {settable}")
    env = {name: c.value for name, c in constants.items()}
    changed: set[str] = set()
    for name, value in new_values.items():
        value = _check_new_value(name, constants[name].value, value, where)
        if value != constants[name].value:
            env[name] = value
            changed.add(name)
    for name, const in constants.items():  # definition order: a derived constant after what it reads
        if const.derived and const.reads & changed and const.expr is not None:
            try:
                value = evaluate(const.expr, env)
            except NotConstant:
                continue
            if value != env[name]:
                env[name] = value
                changed.add(name)
    lines = [f"{name} = {env[name]!r}" for name in constants if name in changed]
    if not lines:
        return source
    return source.rstrip("\n") + f"\n\n# ---- vegtts shape settings ({header}) ----\n" + "\n".join(lines) + "\n"


def scaled_batch(source: str, scale: float) -> dict[str, int]:
    """New values of the batch-role constants under `shape_scale` (at least min(original, MIN_BATCH))."""
    constants = module_constants(ast.parse(source))
    out = {}
    for name, role in infer_roles(source).items():
        if role == "batch":
            value = constants[name].value
            out[name] = max(min(value, MIN_BATCH), int(round(value * scale)))
    return out


def current_values(source: str) -> dict[str, Any]:
    """Final values of every shape constant (after any appended settings)."""
    return {n: c.value for n, c in module_constants(ast.parse(source)).items() if c.is_shape}


# ----------------------------------------------------------------------------- reduction ladder


@dataclass(frozen=True)
class ShapeGroup:
    """Scalable dimensions with one original value: they are reduced together, so equalities the
    problem relies on (square matrices, `batch_size` broadcast against `input_shape[0]`) hold."""

    value: int
    members: tuple[tuple[str, int | None], ...]  # (constant, tuple element or None)
    role: str  # "batch" if every member is a batch dimension, else "size"

    @property
    def minimum(self) -> int:
        return min(self.value, MIN_BATCH if self.role == "batch" else MIN_SIZE)


def shape_groups(source: str) -> list[ShapeGroup]:
    """The scalable dimensions of a problem, grouped by original value (batch groups first)."""
    tree = ast.parse(source)
    constants = module_constants(tree)
    by_value: dict[int, list[tuple[str, int | None, str]]] = {}
    for name, role in infer_roles(tree).items():
        if role == "fixed":
            continue
        value = constants[name].value
        if _is_int(value):
            by_value.setdefault(value, []).append((name, None, role))
        else:
            for i, v in enumerate(value):
                if v > 1:
                    by_value.setdefault(v, []).append((name, i, role))
    groups = [
        ShapeGroup(v, tuple((n, i) for n, i, _ in members), "batch" if all(r == "batch" for *_, r in members) else "size")
        for v, members in by_value.items()
    ]
    return sorted(groups, key=lambda g: (g.role != "batch", -g.value))


def halved(value: int, times: int, minimum: int) -> int:
    """`value` halved `times` times: exact for powers of two, else rounded to a multiple of the
    largest power of two (at most 8) dividing `value` (keeps divisibility by group counts)."""
    if times <= 0:
        return value
    if value & (value - 1) == 0:
        return max(minimum, value >> times)
    step = min(value & -value, 8)
    return max(minimum, step * max(1, round(value / 2**times / step)))


def _config(source_constants: dict[str, Constant], groups: list[ShapeGroup], halvings: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for group, h in zip(groups, halvings):
        new = halved(group.value, h, group.minimum)
        for name, index in group.members:
            if index is None:
                out[name] = new
            else:
                current = list(out.get(name, source_constants[name].value))
                current[index] = new
                out[name] = type(source_constants[name].value)(current)
    return {k: v for k, v in out.items() if v != source_constants[k].value}


def reduction_ladder(source: str) -> list[dict[str, Any]]:
    """Ever smaller shape settings for `source`: step 0 is the original ({}); each step halves one
    more group (batch groups first, then the largest sizes), round robin, until every group is at
    its minimum.  Each step roughly halves the work, so some step is near any target time."""
    constants = module_constants(ast.parse(source))
    groups = shape_groups(source)
    halvings = [0] * len(groups)
    ladder: list[dict[str, Any]] = [{}]
    while True:
        progressed = False
        for i, group in enumerate(groups):
            if halved(group.value, halvings[i] + 1, group.minimum) < halved(group.value, halvings[i], group.minimum):
                halvings[i] += 1
                ladder.append(_config(constants, groups, halvings))
                progressed = True
        if not progressed:
            return ladder


# ----------------------------------------------------------------------------- shape tables

SHAPE_TABLE = Path(__file__).resolve().parent / "kernelbench_shapes.yaml"
_TABLES: dict[tuple[str, float], dict[str, Any]] = {}


def load_shape_table(path: Path) -> dict[str, Any]:
    """A shape table written by `vegtts tasks reduce` ({"problems": {task id: entry}, ...})."""
    import yaml

    key = (str(path), path.stat().st_mtime)
    if key not in _TABLES:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict) or not isinstance(data.get("problems"), dict):
            raise ValueError(f"tasks.shapes: {str(path)!r} is not a shape table (no 'problems' mapping)")
        _TABLES[key] = data
    return _TABLES[key]


def table_path(setting: str) -> Path | None:
    """None for "full", the packaged table for "reduced", else the file named by `setting`."""
    if setting in (None, "", "full"):
        return None
    if setting == "reduced":
        return SHAPE_TABLE
    path = Path(str(setting)).expanduser()
    if not path.is_file():
        raise ValueError(f"tasks.shapes must be 'full', 'reduced' or the path of a shape table file; {setting!r} is neither")
    return path


def table_constants(setting: str, task_id: str, source: str) -> dict[str, Any]:
    """The constants a shape table sets for one problem ({} for "full").

    The table pins each problem's original source by sha256: a problem file that changed since
    the table was made is an error, not a silent misfit.
    """
    path = table_path(setting)
    if path is None:
        return {}
    table = load_shape_table(path)
    entry = table["problems"].get(task_id)
    made_from = table.get("kernelbench_commit", "?")
    if entry is None:
        raise ValueError(
            f"tasks.shapes {setting!r}: the table {str(path)!r} has no entry for task {task_id!r} (it covers "
            f"{len(table['problems'])} KernelBench problems of commit {made_from}); make one with `vegtts tasks reduce` "
            "and set tasks.shapes to its path"
        )
    if entry.get("source_sha256") != sha256_text(source):
        raise ValueError(
            f"tasks.shapes {setting!r}: task {task_id!r} is not the problem file the table was made from (KernelBench "
            f"commit {made_from}; source sha256 differs); make a table for your checkout with `vegtts tasks reduce`"
        )
    return dict(entry.get("constants") or {})
