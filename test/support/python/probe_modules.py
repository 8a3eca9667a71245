"""Prints JSON {module: null if it imports, else the error's last line} for each module named on the command line."""
import importlib
import json
import sys

result = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module("torchvision_cpu" if name == "torchvision" else name)
        result[name] = None
    except Exception as e:  # noqa: BLE001 - any failure means "skip, with this reason"
        result[name] = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
print(json.dumps(result))
