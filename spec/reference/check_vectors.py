#!/usr/bin/env python3
"""Run reader.py over every vector in spec/vectors/MANIFEST and compare.

Prints one line per mismatch and a final `N passed, M failed`; exits 1 on any
mismatch.
"""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SPEC = os.path.dirname(HERE)
VECTORS = os.path.join(SPEC, "vectors")
READER = os.path.join(HERE, "reader.py")
TRUST = os.path.join(VECTORS, "keys", "test-signer.pub")


def main():
    passed = failed = 0
    with open(os.path.join(VECTORS, "MANIFEST")) as f:
        lines = f.read().splitlines()
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split(None, 3)
        name, expected, nonce = parts[0], parts[1], parts[2]
        cmd = [sys.executable, READER, "--trust", TRUST]
        if nonce != "-":
            cmd += ["--session", nonce]
        cmd.append(os.path.join(VECTORS, name))
        p = subprocess.run(cmd, capture_output=True, text=True)
        got = p.stdout.strip() or "<no output: %s>" % p.stderr.strip()[-200:]
        want_rc = 0 if expected == "ok" else 1
        if got == expected and p.returncode == want_rc:
            passed += 1
        else:
            failed += 1
            print("MISMATCH %s: reader %s (exit %d), manifest %s"
                  % (name, got, p.returncode, expected))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
