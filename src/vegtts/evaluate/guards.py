"""Static (AST, in the parent, nothing executed) and parent-side dynamic guards.

A guard returns a reason string ``"<name>: <detail>"`` when it fires, else None; the candidate
then gets status ``rejected`` and ``guard`` = the reason.  Static guards look only at what the
candidate added: a finding that the reference source alone also produces is ignored, so a
reference that imports something unusual does not reject every candidate.  Dynamic guards that
must see live objects (output type, threads, thread count) run in the child (child.CHILD_GUARDS).
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Modules with no honest use in a forward pass and a known role in harness tampering,
# deferred/background work or escaping the sandbox.
BANNED_MODULES = {
    "ctypes", "cffi", "gc", "inspect", "threading", "_thread", "multiprocessing", "concurrent",
    "subprocess", "signal", "socket", "asyncio", "builtins", "importlib", "marshal", "mmap",
    "pickle", "dill", "shutil", "resource", "faulthandler", "sysconfig", "code", "codeop",
    "vegtts",  # the harness itself: a candidate has no use for it but patching it
}
# Attribute names used for harness/timer tampering, lazy tensors or thread tricks.
BANNED_ATTRIBUTES = {
    "_make_subclass": "tensor_subclass",
    "_make_wrapper_subclass": "tensor_subclass",
    "__torch_function__": "tensor_subclass",
    "__torch_dispatch__": "tensor_subclass",
    "set_num_threads": "thread_count_change",
    "set_num_interop_threads": "thread_count_change",
    "_getframe": "frame_access",
    "f_back": "frame_access",
    "f_globals": "frame_access",
    "f_locals": "frame_access",
    "settrace": "tracing",
    "setprofile": "tracing",
    "__subclasses__": "introspection",
    "__globals__": "introspection",
    "__builtins__": "introspection",
    "modules": "module_table",  # sys.modules
    "fork": "process_spawn",
    "forkpty": "process_spawn",
    "system": "process_spawn",
    "popen": "process_spawn",
    "spawnv": "process_spawn",
    "execv": "process_spawn",
    "execve": "process_spawn",
}
BANNED_CALLS = {"exec", "eval", "compile", "__import__", "globals", "breakpoint"}


@dataclass
class StaticContext:
    program: str
    tree: ast.Module
    allow_reference_calls: bool


StaticGuard = Callable[[StaticContext], list[str]]


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _module_aliases(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.update(a.asname or a.name for a in node.names)
    return names


def guard_banned_imports(ctx: StaticContext) -> list[str]:
    found = []
    for node in ast.walk(ctx.tree):
        mods: list[str] = []
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            mods = [node.module]
        for mod in mods:
            if mod.split(".")[0] in BANNED_MODULES:
                found.append(f"banned_import: {mod}")
    return found


def guard_banned_attributes(ctx: StaticContext) -> list[str]:
    found = []
    for node in ast.walk(ctx.tree):
        name = None
        if isinstance(node, ast.Attribute):
            name = node.attr
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in BANNED_ATTRIBUTES:
            name = node.value  # getattr(obj, "_make_subclass")
        if name in BANNED_ATTRIBUTES:
            if name == "modules" and not (isinstance(node, ast.Attribute) and _root_name(node) == "sys"):
                continue
            if name == "system" and not (isinstance(node, ast.Attribute) and _root_name(node) == "os"):
                continue
            found.append(f"{BANNED_ATTRIBUTES[name]}: {name}")
    return found


def guard_dynamic_code(ctx: StaticContext) -> list[str]:
    found = []
    for node in ast.walk(ctx.tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in BANNED_CALLS:
            found.append(f"dynamic_code: {node.func.id}()")
    return found


def guard_monkeypatch(ctx: StaticContext) -> list[str]:
    """Assigning attributes of imported modules (torch.randn = ..., time.perf_counter = ...)."""
    modules = _module_aliases(ctx.tree)
    found = []
    for node in ast.walk(ctx.tree):
        targets: list[ast.AST] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = list(node.targets)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("setattr", "delattr"):
            if node.args and _root_name(node.args[0]) in modules:
                found.append(f"monkeypatch: {node.func.id}({_root_name(node.args[0])}, ...)")
            continue
        for target in targets:
            for t in (target.elts if isinstance(target, (ast.Tuple, ast.List)) else [target]):
                if isinstance(t, ast.Attribute) and _root_name(t) in modules:
                    found.append(f"monkeypatch: {ast.unparse(t)}")
    return found


def guard_reference_calls(ctx: StaticContext) -> list[str]:
    """With allow_reference_calls=False, ModelNew may not run the reference's forward."""
    if ctx.allow_reference_calls:
        return []
    found = []
    for cls in ast.walk(ctx.tree):
        if not (isinstance(cls, ast.ClassDef) and cls.name == "ModelNew"):
            continue
        for node in ast.walk(cls):
            if isinstance(node, ast.Call):
                text = ast.unparse(node.func)
                if text in ("super().forward", "Model.forward", "Model", "super().__call__") or text.startswith("Model."):
                    found.append(f"reference_call: {text}")
    return found


STATIC_GUARDS: list[StaticGuard] = [
    guard_banned_imports,
    guard_banned_attributes,
    guard_dynamic_code,
    guard_monkeypatch,
    guard_reference_calls,
]


def static_findings(program: str, allow_reference_calls: bool) -> list[str]:
    tree = ast.parse(program)
    ctx = StaticContext(program, tree, allow_reference_calls)
    return [reason for guard in STATIC_GUARDS for reason in guard(ctx)]


def static_check(program: str, reference_source: str, allow_reference_calls: bool) -> str | None:
    """First finding of the candidate that the reference source alone does not produce."""
    baseline = set(static_findings(reference_source, True)) if reference_source.strip() else set()
    for reason in static_findings(program, allow_reference_calls):
        if reason not in baseline:
            return reason
    return None


# ----------------------------------------------------------------------------- parent-side guards
# Each takes (reference facts, candidate facts) of one correctness trial; facts are the aliasing
# flags computed the same way for both (see child.aliasing).

ParentGuard = Callable[[dict[str, Any], dict[str, Any]], str | None]


def guard_output_aliases_input(ref: dict[str, Any], cand: dict[str, Any]) -> str | None:
    if cand.get("aliases_input") and not ref.get("aliases_input"):
        return "output_aliasing: the output shares storage with an input (the reference's does not)"
    return None


def guard_output_reuses_buffer(ref: dict[str, Any], cand: dict[str, Any]) -> str | None:
    if cand.get("aliases_previous_output") and not ref.get("aliases_previous_output"):
        return "output_aliasing: the output reuses the storage of an earlier call's output"
    return None


PARENT_GUARDS: list[ParentGuard] = [guard_output_aliases_input, guard_output_reuses_buffer]


def parent_check(ref: dict[str, Any], cand: dict[str, Any]) -> str | None:
    for guard in PARENT_GUARDS:
        reason = guard(ref, cand)
        if reason:
            return reason
    return None


# ----------------------------------------------------------------------------- reference copies


class _Normalise(ast.NodeTransformer):
    """Drops docstrings and annotations, and calls ModelNew `Model`: what does not change behaviour."""

    def visit_Name(self, node: ast.Name) -> ast.AST:
        return ast.copy_location(ast.Name(id="Model", ctx=node.ctx), node) if node.id == "ModelNew" else node

    def _strip_body(self, body: list[ast.stmt]) -> list[ast.stmt]:
        body = [b for b in body if not (isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant) and isinstance(b.value.value, str))]
        return [b for b in body if not isinstance(b, ast.Pass)] or [ast.Pass()]

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        self.generic_visit(node)
        node.returns = None
        for a in node.args.args + node.args.kwonlyargs + node.args.posonlyargs:
            a.annotation = None
        node.body = self._strip_body(node.body)
        return node

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        self.generic_visit(node)
        node.body = self._strip_body(node.body)
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST:
        if node.value is None:
            return ast.Pass()
        return ast.copy_location(ast.Assign(targets=[node.target], value=node.value), node)


def _classdef(tree: ast.Module, name: str) -> ast.ClassDef | None:
    found = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name]
    return found[-1] if found else None


def _is_delegation(fn: ast.stmt, params: list[str]) -> bool:
    """`def m(self, *args): return super().m(*args)` (or Model.m(self, *args)), nothing else."""
    if not isinstance(fn, ast.FunctionDef) or len(fn.body) != 1:
        return False
    stmt = fn.body[0]
    call = stmt.value if isinstance(stmt, (ast.Return, ast.Expr)) else None
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Attribute) or call.func.attr != fn.name or call.keywords:
        return False
    args = [a.id if isinstance(a, ast.Name) else None for a in call.args]
    target = ast.unparse(call.func.value)
    if target == "super()":
        return args == params[1:]
    return target == "Model" and args == params


def is_reference_copy(program: str, reference_source: str) -> bool:
    """Is the candidate's ModelNew the reference's Model (normalised AST equal: docstrings,
    annotations and the class name aside), a bare subclass of it, or a subclass whose methods
    only delegate to Model's?  Such candidates are flagged `reference_copy` for the analyses."""
    try:
        tree, ref_tree = ast.parse(program), ast.parse(reference_source)
    except (SyntaxError, ValueError, RecursionError):
        return False
    if any(isinstance(n, ast.Assign) and [ast.unparse(t) for t in n.targets] == ["ModelNew"] and ast.unparse(n.value) == "Model"
           for n in tree.body):
        return True
    cand, ref = _classdef(tree, "ModelNew"), _classdef(ref_tree, "Model")
    if cand is None or ref is None:
        return False
    cand, ref = _Normalise().visit(cand), _Normalise().visit(ref)
    bases = [ast.unparse(b) for b in cand.bases]
    if bases == ["Model"]:
        body = [b for b in cand.body if not isinstance(b, ast.Pass)]
        if all(isinstance(b, ast.FunctionDef) and _is_delegation(b, [a.arg for a in b.args.args]) for b in body):
            return True
    elif bases != [ast.unparse(b) for b in ref.bases]:
        return False
    cand.bases, ref.bases, cand.name = [], [], "Model"
    return ast.dump(cand) == ast.dump(ref)
