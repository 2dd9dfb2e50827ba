"""Build the API reference (HTML) from the docstrings with pdoc.

    python scripts/build_api_docs.py [OUT_DIR]        # default: docs/api

pdoc documents only the names a package lists in ``__all__``; this script walks both
packages and passes every public module explicitly, so submodules (the functional
core, the adapters, the language model, the Lava processes) get pages too.
"""

from __future__ import annotations

import pkgutil
import sys
from pathlib import Path


def public_modules(package: str) -> list[str]:
    mod = __import__(package)
    names = [package]
    for info in pkgutil.walk_packages(mod.__path__, prefix=package + "."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return names


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0] if argv else "docs/api")
    import pdoc
    import pdoc.render

    modules = public_modules("astro_neuron") + public_modules("neuromorphic")
    pdoc.render.configure(docformat="google")
    pdoc.pdoc(*modules, output_directory=out)
    print(f"API reference for {len(modules)} modules in {out}/ (open {out}/index.html)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
