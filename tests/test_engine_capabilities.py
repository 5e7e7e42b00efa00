"""Engines declare what they can do beyond generating (`mel.engines.base.Capabilities`); stages ask the flags, never
an engine's type: no ``isinstance``/``hasattr`` on an engine and no engine class named outside ``mel/engines``."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from mel.engines.base import Capabilities, TokenEngine

from conftest import REPO

STAGE_CODE = ("mel/stages", "mel/experience", "mel/eval", "tasks", "flows")
ENGINE_CLASSES = {"TransformersEngine", "VLLMEngine"}


def test_the_transformers_engine_hands_its_model_over_and_writes_fields_in_one_pass(tiny_model, tiny_model_path):
    from mel.engines.hf import TransformersEngine

    model, tok = tiny_model
    engine = TransformersEngine(tiny_model_path, model=model, tokenizer=tok, batch_size=2)
    assert engine.capabilities == Capabilities(fields_in_one_pass=True, model_in_memory=True)
    assert engine.policy() == (model, tok)
    with pytest.raises(NotImplementedError, match="TransformersEngine does not have the capability takes_weights"):
        engine.load_weights(model.named_parameters())


def test_an_engine_declaring_nothing_refuses_each_capabilitys_method():
    engine = TokenEngine()
    assert engine.capabilities == Capabilities()
    for call, flag in ((lambda: engine.policy(), "model_in_memory"), (lambda: engine.release_memory(), "takes_weights"),
                       (lambda: engine.generate_fields([[1]], ["a:"], [1], 1.0, 0), "fields_in_one_pass")):
        with pytest.raises(NotImplementedError, match=f"capability {flag}"):
            call()


def _type_checks_on_engines(path: Path) -> list[str]:
    where = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("isinstance", "hasattr"):
            subject = ast.unparse(node.args[0]) if node.args else ""
            if "engine" in subject.lower() or "receiver" in subject.lower():
                found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
        if isinstance(node, ast.Name) and node.id in ENGINE_CLASSES:
            found.append(f"{where}:{node.lineno}: names {node.id}")
        if isinstance(node, ast.ImportFrom) and any(a.name in ENGINE_CLASSES for a in node.names):
            found.append(f"{where}:{node.lineno}: imports an engine class")
    return found


def test_stages_ask_capabilities_not_types():
    files = [p for d in STAGE_CODE for p in sorted((REPO / d).rglob("*.py"))]
    assert len(files) > 20
    assert [hit for p in files for hit in _type_checks_on_engines(p)] == []


def test_the_scan_finds_a_type_check(tmp_path):
    """The scan above can fail: it flags each way a stage could ask an engine's type."""
    bad = tmp_path / "probe.py"
    bad.write_text("from mel.engines.hf import TransformersEngine\n"
                   "def f(engine, receiver):\n    return isinstance(engine, TransformersEngine) or "
                   "hasattr(receiver, 'load_weights')\n")
    assert len(_type_checks_on_engines(bad)) == 4
