"""Runs a README snippet verbatim, then prints JSON of expressions evaluated in the namespace it left.

Usage: python run_snippet.py SNIPPET.py EXPRESSIONS.json  (run in the folder the snippet's file names refer to)
EXPRESSIONS.json maps a name to a Python expression, e.g. {"X": "X.tolist()"}. NaN becomes null (a null label).
"""
import json
import math
import sys

with open(sys.argv[1], encoding="utf-8") as f:
    code = f.read()
with open(sys.argv[2], encoding="utf-8") as f:
    expressions = json.load(f)
namespace = {"__name__": "__main__"}
exec(compile(code, "README snippet", "exec"), namespace)  # noqa: S102 - running the README's code is the point


def plain(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


print(json.dumps({name: plain(eval(expr, namespace)) for name, expr in expressions.items()}))  # noqa: S307
