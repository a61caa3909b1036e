"""The layering of the code, checked on its import graph (AST, no imports executed):

* the engine (`mne_core`) never imports the app, Panel, HoloViews, Bokeh, tqdm or the CLI;
* the engine's modules import each other without cycles (also counting imports inside functions);
* no module imports a private name (``_x``) of another module of this repository;
* notebooks, benchmarks and tests reach the engine through its public API.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN_IN_ENGINE = ("app", "panel", "holoviews", "bokeh", "tqdm", "param")


def _imports(source: str, module: str, package: str):
    """(imported module, names) pairs of a module's source, relative imports resolved."""
    tree = ast.parse(source)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((mod, [a.name for a in node.names]))
    return out


def _python_files(folder: str):
    return sorted((ROOT / folder).glob("*.py"))


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _notebook_sources():
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        src = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        yield nb, "\n".join(ln for ln in src.splitlines() if not ln.lstrip().startswith(("%", "!")))


def test_engine_never_imports_the_app_or_ui_libraries():
    for f in _python_files("mne_core"):
        for mod, _ in _imports(f.read_text(), _module_name(f), "mne_core"):
            top = mod.split(".")[0]
            assert top not in FORBIDDEN_IN_ENGINE, f"{f.name} imports {mod}"


def test_engine_import_graph_has_no_cycle():
    graph = {}
    for f in _python_files("mne_core"):
        name = _module_name(f)
        if name == "mne_core":
            continue
        deps = set()
        for mod, names in _imports(f.read_text(), name, "mne_core"):
            if mod == "mne_core":
                deps |= {f"mne_core.{n}" for n in names}
            elif mod.startswith("mne_core."):
                deps.add(".".join(mod.split(".")[:2]))
        graph[name] = deps - {name}
    state = {}

    def visit(n, path):
        if state.get(n) == 1:
            raise AssertionError("import cycle: " + " → ".join(path + [n]))
        if state.get(n) == 2:
            return
        state[n] = 1
        for m in graph.get(n, ()):
            if m in graph:
                visit(m, path + [n])
        state[n] = 2

    for n in graph:
        visit(n, [])


def test_no_private_names_cross_modules():
    own = {_module_name(f) for d in ("mne_core", "app") for f in _python_files(d)}
    sources = [(f, _module_name(f)) for d in ("mne_core", "app", "tests", "benchmarks") for f in _python_files(d)]
    for f, name in sources:
        pkg = name if f.name == "__init__.py" else name.rsplit(".", 1)[0] if "." in name else name
        for mod, names in _imports(f.read_text(), name, pkg):
            if mod in own or mod.split(".")[0] in ("mne_core", "app"):
                private = [n for n in names if n.startswith("_") and not n.startswith("__")]
                assert not private, f"{f.relative_to(ROOT)} imports private {private} from {mod}"


def test_notebooks_and_benchmarks_use_the_public_api():
    """Only names the engine exports (``mne_core.X``) or public names of its public modules."""
    import importlib

    import mne_core

    public = set(dir(mne_core))
    texts = [(nb, src) for nb, src in _notebook_sources()]
    texts += [(f, f.read_text()) for f in _python_files("benchmarks")]
    for path, src in texts:
        for mod, names in _imports(src, "x", "x"):
            if mod == "mne_core":
                missing = [n for n in names if n not in public]
                assert not missing, f"{path.name} imports non-public {missing}"
            elif mod.startswith("mne_core."):
                assert not any(p.startswith("_") for p in mod.split(".")), f"{path.name} imports {mod}"
                module = importlib.import_module(mod)
                exported = set(getattr(module, "__all__", [n for n in dir(module) if not n.startswith("_")]))
                hidden = [n for n in names if n not in exported]
                assert not hidden, f"{path.name} imports {hidden} from {mod}, which does not export them"
