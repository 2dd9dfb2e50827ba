"""The architecture rules of docs/architecture.md, checked.

1. The import contracts in pyproject.toml ([tool.importlinter]: one direction
   apps -> neuromorphic -> astro_neuron library, the layers inside astro_neuron, no
   import cycles) hold: import-linter checks them on this checkout.
2. Imports sit at the top of modules. An import inside a function is allowed only for a
   heavy optional dependency (HEAVY, each with its reason), with a ``# deferred``
   comment in that function saying why, or for a pair listed in ALLOWED with its reason.
   PENDING lists the files whose owners still move imports up (issue 9): their number of
   other imports inside functions may only go down.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("astro_neuron", "neuromorphic")

# Heavy optional dependencies a function may import where it needs them.
HEAVY = {
    "lava": "Lava: seconds to import, needs the Python 3.11 shim; only the Lava engine uses it",
    "spikingjelly": "optional framework: only its adapter and the scan benchmark use it",
    "snntorch": "optional framework: only its adapter and the scan benchmark use it",
    "matplotlib": "about 0.3 s to import; only functions that draw use it, so the library "
                  "and the command line start without it",
    "nir": "optional extra [nir]",
    "fla": "optional extra [cuda]: flash-linear-attention imports Triton; only the CUDA scan "
           "(functional/scan_fla.py) uses it, on first use",
    "nirtorch": "optional extra [nir]",
    "numba": "LLVM: about 0.3 s to import; the scans' CPU kernels (functional/compiled.py) "
             "import it on their first call, so importing the library does not pay it",
    "nest": "NEST 3.10: optional simulator, about 1 s to import, prints a banner",
    "elephant": "imports scikit-learn and scipy.stats (seconds); only neuro.analysis uses it",
    "neo": "with quantities, only neuro.analysis / neuro.export build spike trains",
    "quantities": "only neuro.analysis / neuro.export need physical units",
    "pynwb": "seconds to import; only the NWB export uses it",
    "sklearn": "seconds to import; only neuro.analysis.decoding_accuracy uses it",
    "lm_eval": "lm-evaluation-harness with datasets and pyarrow: about 2.5 s to import; only "
               "the zero-shot commands use it",
}

# (file, imported module) pairs deferred on purpose that are not a heavy dependency.
ALLOWED: dict[tuple[str, str], str] = {
    ("astro_neuron/apps/env_check.py", "astro_neuron"):
        "importing astro_neuron imports torch: the installation check must time and report "
        "each import, not fail before its first line",
    ("astro_neuron/apps/env_check.py", "neuromorphic.engines.lava._compat"):
        "importing neuromorphic imports torch: the installation check must time and report "
        "each import, not fail before its first line",
    ("astro_neuron/apps/cli/zeroshot.py", "astro_neuron.lm.harness"):
        "the harness adapter imports lm_eval and datasets at its top (its model class "
        "subclasses lm_eval's): importing it is importing lm_eval, deferred like it",
    ("astro_neuron/apps/demo/zeroshot.py", "astro_neuron.lm.harness"):
        "the harness adapter imports lm_eval and datasets at its top (its model class "
        "subclasses lm_eval's): importing it is importing lm_eval, deferred like it",
    ("neuromorphic/engines/lava/runner.py", "neuromorphic.engines.lava.procs.amsu.process"):
        "the AMSUNeuron process module imports Lava at its top (Lava's compiler needs it "
        "there): importing it is importing Lava, deferred like Lava itself",
}

# Files whose owners still move their imports to the top (issue 9); the number of
# imports inside functions that are neither HEAVY nor ALLOWED may only go down: lower it
# when you remove one, delete the entry at 0.
PENDING: dict[str, int] = {
}


def _run_import_linter() -> subprocess.CompletedProcess:
    code = ("import sys\n"
            "from importlinter import configuration\n"
            "from importlinter.application.use_cases import lint_imports\n"
            "configuration.configure()\n"
            "ok = lint_imports(config_filename='pyproject.toml', cache_dir=None, no_logo=True)\n"
            "sys.exit(0 if ok else 1)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="200")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_import_contracts_hold():
    out = _run_import_linter()
    report = out.stdout + out.stderr
    assert out.returncode == 0, report
    assert "0 broken" in report and "BROKEN" not in report, report


def _contracts() -> dict[str, dict]:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["id"]: c for c in cfg["contracts"]}


def _children(package: str) -> set[str]:
    base = ROOT / package
    names = {p.stem for p in base.glob("*.py") if p.stem != "__init__"}
    names |= {p.parent.name for p in base.glob("*/__init__.py")}
    return {f"{package}.{n}" for n in names}


def test_library_contract_lists_every_library_module():
    """A new module of astro_neuron is covered by the 'library below neuromorphic' rule."""
    library = set(_contracts()["library-below-neuromorphic"]["source_modules"])
    expected = _children("astro_neuron") - {"astro_neuron.apps", "astro_neuron.__main__"}
    assert library == expected, (sorted(expected - library), sorted(library - expected))


def test_importing_the_library_loads_neither_neuromorphic_nor_apps():
    code = ("import sys, astro_neuron, astro_neuron.lm, astro_neuron.neuro, "
            "astro_neuron.integrations, astro_neuron.plot, astro_neuron.tasks\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'neuromorphic' "
            "or m.startswith('astro_neuron.apps'))\n"
            "print(bad)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def _imports_in_functions(path: Path):
    """(import node, enclosing function node) for every import inside a function."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    stack = [(tree, None)]
    while stack:
        node, func = stack.pop()
        for child in ast.iter_child_nodes(node):
            if func is not None and isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append((child, func))
            inner = child if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                ast.Lambda)) else func
            stack.append((child, inner))
    return found


def _imported(node) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    return [node.module or ""] if node.level == 0 else [f"<relative>.{node.module}"]


def _says_deferred(lines: list[str], func, node) -> bool:
    """A ``# deferred`` comment in the function, at or before the import's line."""
    return any("# deferred" in lines[i - 1] for i in range(func.lineno, node.lineno + 1))


def function_imports() -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Per file: the imports inside functions that break the rule, and the heavy ones
    that lack their ``# deferred`` comment."""
    undeclared: dict[str, list[str]] = {}
    uncommented: dict[str, list[str]] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            lines = path.read_text().splitlines()
            for node, func in _imports_in_functions(path):
                for mod in _imported(node):
                    where = f"{rel}:{node.lineno} {mod}"
                    if mod.split(".")[0] in HEAVY:
                        if not _says_deferred(lines, func, node):
                            uncommented.setdefault(rel, []).append(where)
                    elif (rel, mod) not in ALLOWED:
                        undeclared.setdefault(rel, []).append(where)
    return undeclared, uncommented


def test_imports_inside_functions_are_declared_deferrals():
    undeclared, uncommented = function_imports()
    over = {rel: found for rel, found in undeclared.items() if len(found) > PENDING.get(rel, 0)}
    assert not over, ("imports inside functions: move them to the top of the module, or, for "
                      f"a heavy optional dependency, add it to HEAVY with its reason: {over}")
    mine = {rel: found for rel, found in uncommented.items() if rel not in PENDING}
    assert not mine, f"say why in a '# deferred' comment in the function: {mine}"


def test_pending_list_is_not_stale():
    """An entry of PENDING names a file that exists; at 0 it is deleted."""
    assert all((ROOT / rel).is_file() and n > 0 for rel, n in PENDING.items()), PENDING
