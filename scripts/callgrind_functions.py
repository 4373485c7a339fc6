#!/usr/bin/env python3
"""Prints the functions of BINARY that callgrind saw run, as its symbol table names them.

Usage: callgrind_functions.py BINARY CALLGRIND_OUT...

Each output file (valgrind --tool=callgrind --demangle=no) names functions by "fn=" lines
under the object ("ob=") they belong to; the functions of the object whose path ends with
BINARY's file name are kept, in the order the files are given and, within a file, in the
order callgrind lists them, each once. Names the binary's symbol table does not define as
code (addresses callgrind could not name, other objects' functions) are left out: the list
is meant for lld's --symbol-ordering-file (scripts/symbol-order.sh).
"""

import os
import re
import subprocess
import sys

OBJECT = re.compile(r"^(c?ob)=\((\d+)\)(?: (.*))?$")
FUNCTION = re.compile(r"^(c?fn)=\((\d+)\)(?: (.*))?$")


def functions_run(path, binary_name):
    """Yields the names of the functions of `binary_name` that ran, from one output file."""
    objects, functions, current = {}, {}, None
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            m = OBJECT.match(line)
            if m:
                kind, i, name = m.groups()
                if name:
                    objects[i] = name
                if kind == "ob":
                    current = objects.get(i)
                continue
            m = FUNCTION.match(line)
            if m:
                kind, i, name = m.groups()
                if name:
                    functions[i] = name
                if kind == "fn" and current and os.path.basename(current) == binary_name:
                    yield functions[i]


def code_symbols(binary):
    nm = subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True, check=True)
    symbols = set()
    for line in nm.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tTwW":
            symbols.add(parts[2])
    return symbols


def main():
    binary, outs = sys.argv[1], sys.argv[2:]
    symbols = code_symbols(binary)
    seen = set()
    for out in outs:
        for name in functions_run(out, os.path.basename(binary)):
            if name in symbols and name not in seen:
                seen.add(name)
                print(name)


if __name__ == "__main__":
    main()
