#!/usr/bin/env python3
"""Fails when a non-test Rust function in the given files or folders is longer
than N lines. Relies on rustfmt's layout: a function's closing brace sits at the
indentation of its `fn` line. `#[cfg(test)]` modules and the SHA-256 round
kernels (crates/sha2x, not scanned) are exempt.

Usage: function_length.py N PATH...
"""
import os
import re
import sys

FN = re.compile(r'^(\s*)(pub(\([^)]*\))? )?(const )?(unsafe )?(extern "C" )?fn (\w+)')


def files(paths):
    for p in paths:
        if os.path.isdir(p):
            for root, _, names in os.walk(p):
                for n in sorted(names):
                    if n.endswith(".rs"):
                        yield os.path.join(root, n)
        else:
            yield p


def long_functions(path, limit):
    lines = open(path, encoding="utf-8").read().split("\n")
    test_indent = None
    for i, line in enumerate(lines):
        if test_indent is not None:
            if line == " " * test_indent + "}":
                test_indent = None
            continue
        if re.match(r"^\s*#\[cfg\(test\)\]", line):
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            if re.match(r"^\s*(pub(\([^)]*\))? )?mod \w+ \{", nxt):
                test_indent = len(nxt) - len(nxt.lstrip())
            continue
        m = FN.match(line)
        if not m or line.rstrip().endswith(";"):
            continue
        close = m.group(1) + "}"
        for j in range(i + 1, len(lines)):
            if lines[j] == close:
                if j - i + 1 > limit:
                    yield i + 1, m.group(7), j - i + 1
                break


def main():
    limit = int(sys.argv[1])
    bad = [(f, *hit) for f in files(sys.argv[2:]) for hit in long_functions(f, limit)]
    for f, line, name, n in bad:
        print(f"{f}:{line}: fn {name} is {n} lines (limit {limit})")
    if bad:
        sys.exit(1)
    print(f"function length: every non-test function is at most {limit} lines")


if __name__ == "__main__":
    main()
