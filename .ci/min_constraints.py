"""Print a pip constraints file pinning every dependency to its declared floor.

Reads ``pyproject.toml`` (runtime dependencies and every optional extra) and turns
each ``name>=X`` into ``name==X``, so CI can install the oldest versions the
project claims to support. A dependency without a ``>=`` floor is an error:
every floor must be declared, and CI proves it true.

Usage: python .ci/min_constraints.py [pyproject.toml] > min-constraints.txt
"""
import sys
import tomllib

from packaging.requirements import Requirement


def floors(pyproject):
    """Return ``["name==floor", ...]`` for the dependencies in ``pyproject``."""
    with open(pyproject, "rb") as fh:
        project = tomllib.load(fh)["project"]
    reqs = project["dependencies"] + [r for extra in project["optional-dependencies"].values()
                                      for r in extra]
    pins = []
    for text in reqs:
        req = Requirement(text)
        lows = [s.version for s in req.specifier if s.operator == ">="]
        if len(lows) != 1:
            sys.exit(f"{pyproject}: dependency {text!r} needs exactly one '>=' floor")
        pins.append(f"{req.name}=={lows[0]}")
    return pins


if __name__ == "__main__":
    print("\n".join(floors(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml")))
