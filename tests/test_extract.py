"""Code extraction and program assembly."""

from __future__ import annotations

import torch

from vegtts.extract import assemble_program, code_token_span, extract, extract_code
from vegtts.tasks import load_tasks
from vegtts.tasks.runtime import load_module_from_source, make_inputs, make_model


def test_unfenced_body_before_closing_fence():
    assert extract_code("return torch.relu(x)\n```\n", "body", "stop") == ("ok", "return torch.relu(x)")


def test_fenced_block_with_language_tag():
    text = "Here is the code:\n```python\ny = x * 2\nreturn y\n```\nDone."
    assert extract_code(text, "body", "stop") == ("ok", "y = x * 2\nreturn y")


def test_fenced_block_at_start_without_tag():
    assert extract_code("```\nreturn x.abs()\n```", "body", "stop") == ("ok", "return x.abs()")


def test_no_fence_at_all():
    assert extract_code("return torch.sigmoid(x)", "body", "length") == ("ok", "return torch.sigmoid(x)")


def test_prose_and_empty_are_no_code():
    assert extract_code("This is already optimal.", "body", "stop")[0] == "no_code"
    assert extract_code("", "body", "stop") == ("no_code", "")
    assert extract_code("  \n```", "body", "stop") == ("no_code", "")


def test_truncated_output_keeps_what_parses():
    text = "y = torch.relu(x)\nreturn y\nz = torch.where(x >"
    assert extract_code(text, "body", "length") == ("ok", "y = torch.relu(x)\nreturn y")


def test_truncated_output_that_never_parses():
    status, code = extract_code("return torch.where(x > 0,", "body", "length")
    assert status == "truncated" and code.startswith("return torch.where")


def test_unparsable_but_finished_output_goes_to_the_evaluator():
    # Not truncated: a syntax error is the evaluator's verdict, not extraction's.
    assert extract_code("return torch.where(x > 0,", "body", "stop") == ("ok", "return torch.where(x > 0,")


def test_full_def_forward_becomes_body():
    text = "def forward(self, x):\n    y = x + 1\n    return y\n"
    assert extract_code(text, "body", "stop") == ("ok", "y = x + 1\nreturn y")


def test_class_modelnew_becomes_body():
    text = (
        "class ModelNew(Model):\n    def helper(self):\n        return 1\n\n"
        "    def forward(self, x):\n        return torch.relu(x)\n"
    )
    assert extract_code(text, "body", "stop") == ("ok", "return torch.relu(x)")


def test_module_format_keeps_the_class():
    text = "class ModelNew(nn.Module):\n    def forward(self, x):\n        return x\n"
    assert extract_code(text, "module", "stop") == ("ok", text.rstrip())


def test_indentation_is_normalised():
    assert extract_code("        y = x * 2\n        return y\n", "body", "stop") == ("ok", "y = x * 2\nreturn y")
    # first line at column 0, the rest indented as inside a method (the prompt left the cursor there)
    assert extract_code("y = x * 2\n        return y\n", "body", "stop") == ("ok", "y = x * 2\nreturn y")


def test_curly_quotes_are_normalised():
    assert extract_code("return x.sum(dim=\u201c0\u201d)", "body", "stop")[1] == 'return x.sum(dim="0")'


def test_char_span_points_into_the_completion():
    text = "```python\n    return torch.relu(x)\n```"
    e = extract(text, "body", "stop")
    assert text[e.char_start : e.char_end] == "return torch.relu(x)"


class _CharTokenizer:
    """Every character is a token; decode joins them."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids)


def test_code_token_span_maps_chars_to_tokens():
    tok = _CharTokenizer()
    text = "xx\nreturn y\n```"
    ids = [ord(c) for c in text]
    e = extract(text, "body", "stop")
    start, end = code_token_span(ids, tok, e.char_start, e.char_end)
    assert tok.decode(ids[start:end]) == "xx\nreturn y"
    assert code_token_span(ids, tok, 5, 5) == (0, 0)


def _run_candidate(spec, program):
    ref_mod = load_module_from_source(spec.source, "ref", "<ref>")
    cand_mod = load_module_from_source(program, "cand", "<cand>")
    ref, cand = make_model(ref_mod, 0), make_model(cand_mod, 0, "ModelNew")
    cand.load_state_dict(ref.state_dict())
    inputs = make_inputs(ref_mod, 1)
    return ref(*inputs), cand(*inputs)


def test_assembled_body_program_runs_and_matches():
    spec = load_tasks({"suite": "builtin", "ids": ["leaky_relu_where"]})[0]
    program = assemble_program(spec, "body", "return F.leaky_relu(x, self.negative_slope)")
    assert program.startswith("import torch.nn.functional as F")  # added, the reference lacks it
    assert "class ModelNew(Model):\n    def forward(self, x):\n        return F.leaky_relu" in program
    want, got = _run_candidate(spec, program)
    torch.testing.assert_close(got, want)


def test_assembled_module_program_runs_and_matches():
    spec = load_tasks({"suite": "builtin", "ids": ["relu_where"]})[0]
    module = "class ModelNew(nn.Module):\n    def forward(self, x):\n        return torch.relu(x)"
    want, got = _run_candidate(spec, assemble_program(spec, "module", module))
    torch.testing.assert_close(got, want)


def test_no_code_gives_empty_program():
    spec = load_tasks({"suite": "builtin", "ids": ["relu_where"]})[0]
    assert assemble_program(spec, "body", "  ") == ""
