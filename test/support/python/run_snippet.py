"""Runs a README snippet verbatim, then prints JSON of expressions evaluated in the namespace it left.

Usage: python run_snippet.py SNIPPET.py EXPRESSIONS.json [NAME INPUTS.json]
Run in the folder the snippet's file names refer to. EXPRESSIONS.json maps a name to a Python expression, e.g.
{"X": "X.tolist()"}; NaN becomes null (a null label). With NAME and INPUTS.json (a list of files), the snippet runs
once per input with NAME (e.g. photo.jpg) a symlink to it, each time in a fresh namespace, and a list is printed.
"""
import contextlib
import io
import json
import math
import os
import sys

with open(sys.argv[1], encoding="utf-8") as f:
    code = compile(f.read(), "README snippet", "exec")
with open(sys.argv[2], encoding="utf-8") as f:
    expressions = json.load(f)


def plain(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def run_once():
    namespace = {"__name__": "__main__"}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(code, namespace)  # noqa: S102 - running the README's code is the point
    result = {name: plain(eval(expr, namespace)) for name, expr in expressions.items()}  # noqa: S307
    result["__stdout__"] = printed.getvalue()
    return result


if len(sys.argv) > 3:
    name = sys.argv[3]
    with open(sys.argv[4], encoding="utf-8") as f:
        inputs = json.load(f)
    results = []
    for item in inputs:
        if os.path.lexists(name):
            os.remove(name)
        os.symlink(item, name)
        results.append(run_once())
    print(json.dumps(results))
else:
    print(json.dumps(run_once()))
