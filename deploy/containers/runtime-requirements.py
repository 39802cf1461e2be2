"""Print kanjian's runtime dependencies from pyproject.toml, minus ONNX Runtime.

The images install kanjian with ``pip install --no-deps`` and these requirements
beside it, then the one ONNX Runtime build that fits the image (CPU, CUDA or
NVIDIA's Jetson wheel): pip never sees the pyproject's ``onnxruntime*`` lines, so
no second build can replace the one chosen. Usage: ``python runtime-requirements.py
pyproject.toml [EXTRA ...] > requirements.txt``.
"""

import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (the Jetson image): the same parser, by its old name
    import tomli as tomllib

with open(sys.argv[1], "rb") as f:
    project = tomllib.load(f)["project"]
deps = list(project["dependencies"])
for extra in sys.argv[2:]:  # e.g. "training": that extra's pins too
    deps += project["optional-dependencies"][extra]
for d in deps:
    name = d.split(";")[0].strip()
    if not name.lower().startswith("onnxruntime"):
        print(name)
