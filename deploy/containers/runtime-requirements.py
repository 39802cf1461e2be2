"""Print kanjian's requirements from pyproject.toml: the runtime's plus the named extras'.

The images install these first, in a layer of their own that a code change does not
rebuild, and kanjian itself after them with ``pip install --no-deps``. The ONNX Runtime
build comes from the extra the image names (``cpu``: onnxruntime, ``cuda``:
onnxruntime-gpu, ``jetson``: none, NVIDIA's wheel is installed by the image), never from
the runtime's own list, which has none. Usage: ``python runtime-requirements.py
pyproject.toml [EXTRA ...] > requirements.txt``; an extra that pyproject does not have
is an error (exit status 1), so a renamed extra fails the build instead of installing less.
"""

import re
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (the Jetson image): the same parser, by its old name
    import tomli as tomllib

with open(sys.argv[1], "rb") as f:
    project = tomllib.load(f)["project"]
extras = project.get("optional-dependencies", {})
SELF = re.compile(r"^kanjian\[([^\]]*)\]\s*(;.*)?$")


def requirements(names, seen):
    """The requirement lines of these extras, their references to ``kanjian[...]`` opened."""
    out = []
    for name in names:
        if name in seen:
            continue
        seen.add(name)
        if name not in extras:
            sys.exit(f"error: pyproject.toml has no extra {name!r} (it has: {', '.join(extras)})")
        for req in extras[name]:
            m = SELF.match(req.strip())
            if m is None:
                out.append(req)
            elif m.group(2) is None:  # unconditional: inline it
                out += requirements([e.strip() for e in m.group(1).split(",")], seen)
            else:  # a marker on a reference to ourselves: pip must not see it
                sys.exit(f"error: {req!r}: name the extra in the image instead")
    return out


for line in [*project["dependencies"], *requirements(sys.argv[2:], set())]:
    print(line)
