"""The layout: one job per file, imports one way (core <- records <- {flower, results}; bench ->
{core, records, flower}). Read from the sources' import statements, so a new import that points
the wrong way fails here."""
import ast
from pathlib import Path

import hasa_core as H

PROJECT = ("hasa_core", "hasa_records", "hasa_results", "hasa_flower", "hasa_bench")
ALLOWED = {  # module -> the project modules it may import
    "hasa_core": set(),
    "hasa_records": {"hasa_core"},
    "hasa_results": {"hasa_core", "hasa_records", "hasa_results"},
    "hasa_flower": {"hasa_core", "hasa_records", "hasa_flower"},
    "hasa_bench": {"hasa_core", "hasa_records", "hasa_flower"},
}


def _sources(module: str) -> list[Path]:
    path = H.REPO / module
    return sorted(path.glob("*.py")) if path.is_dir() else [path.with_suffix(".py")]


def _project_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
        found |= {n.split(".")[0] for n in names if n.split(".")[0] in PROJECT}
    return found


def test_imports_point_one_way():
    wrong = {f"{p.relative_to(H.REPO)} imports {sorted(_project_imports(p) - allowed)}"
             for module, allowed in ALLOWED.items() for p in _sources(module) if _project_imports(p) - allowed}
    assert not wrong, wrong


def test_the_engine_writes_no_file_and_has_no_command_line():
    src = (H.REPO / "hasa_core.py").read_text(encoding="utf-8")
    assert "__main__" not in src and "argparse" not in src
    assert not any(w in src for w in ("write_text(", "write_bytes(", "os.replace(", "savez", ".to_csv("))


def test_every_module_says_its_job_and_what_it_may_import():
    for module in PROJECT:
        for p in _sources(module):
            doc = ast.get_docstring(ast.parse(p.read_text(encoding="utf-8"))) or ""
            assert doc, f"{p.name} has no module docstring"
            if p.name not in ("__main__.py",) and module != "hasa_core":
                assert "Imports:" in doc, f"{p.relative_to(H.REPO)}'s docstring does not say what it may import"
