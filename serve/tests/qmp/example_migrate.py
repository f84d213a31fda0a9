#!/usr/bin/env python3
"""What a management stack does with two `mdevmig serve` sockets, one per host:
describe on the source, check on the destination, a session nonce from the
destination, then a restore job and a save job joined by a pipe passed to
both services (SCM_RIGHTS, then getfd), with their events, and query-jobs.

    python3 example_migrate.py SOURCE.sock DEST.sock DEVICE

serve/README.md shows a run of it; serve/tests/qmp/test_serve.py runs it too.
"""

import asyncio
import json
import os
import sys

from qemu.qmp import QMPClient


def show(v):
    return json.dumps(v, separators=(", ", ": "))


async def run(side, qmp, cmd, args=None, shown=None):
    print(f"{side} -> {cmd} {show(shown or args or {})}")
    r = await qmp.execute(cmd, args)
    return r


async def events(side, qmp, job_id, done):
    """Prints one job's events until JOB_FINISHED; returns its data."""
    async for ev in qmp.events:
        data = ev["data"]
        if data.get("id") != job_id:
            continue
        print(f"{side} <- {ev['event']} {show(data)}")
        if ev["event"] == "JOB_FINISHED":
            done[side] = data
            return


async def pass_fd(side, qmp, fd, name):
    qmp.send_fd_scm(fd)
    os.close(fd)
    await run(side, qmp, "getfd", {"fdname": name})


async def main(src_sock, dst_sock, device):
    src, dst = QMPClient("source"), QMPClient("destination")
    await src.connect(src_sock)
    await dst.connect(dst_sock)
    for side, qmp in (("src", src), ("dst", dst)):
        print(f"{side}: connected to {qmp.greeting.QMP.version['package']}, capabilities negotiated")

    descriptor = await run("src", src, "describe", {"device": device})
    window = "{oldest}..{newest}".format(**descriptor["produce"])
    print(f"src <- {descriptor['vendor']} {descriptor['device_type']}, produces state {window}, "
          f"flags {'|'.join(descriptor['migration_flags'])}")
    verdict = await run("dst", dst, "check", {"device": device, "source": descriptor},
                        shown={"device": device, "source": "(the descriptor describe returned)"})
    sections = ", ".join(f"{s['name']} {s['action']}" for s in verdict["sections"])
    print(f"dst <- compatible {verdict['compatible']}, emit version {verdict['emit_version']}, "
          f"sections: {sections}")
    if not verdict["compatible"]:
        print("dst <- reasons " + show(verdict["reasons"]))
        return 1
    nonce = (await run("dst", dst, "session-new"))["nonce"]
    print(f"dst <- nonce {nonce}")

    r, w = os.pipe()
    await pass_fd("dst", dst, r, "from-source")
    await pass_fd("src", src, w, "to-destination")
    done = {}
    watch = [asyncio.create_task(events("dst", dst, "vm-in", done)),
             asyncio.create_task(events("src", src, "vm-out", done))]
    await asyncio.sleep(0)  # the listeners are in place before the jobs start
    await run("dst", dst, "restore", {"job-id": "vm-in", "device": device,
                                      "fdname": "from-source", "session": nonce})
    await run("src", src, "save", {"job-id": "vm-out", "device": device,
                                   "fdname": "to-destination", "session": nonce})
    await asyncio.wait_for(asyncio.gather(*watch), 120)

    for side, qmp in (("src", src), ("dst", dst)):
        for j in await run(side, qmp, "query-jobs"):
            digest = j.get("result", {}).get("state_digest")
            print(f"{side} <- job {j['id']}: {j['type']} {j['status']}, "
                  f"{j['current-progress']} bytes, state digest {digest}")
    await src.disconnect()
    await dst.disconnect()
    same = done["src"]["result"]["state_digest"] == done["dst"]["result"]["state_digest"]
    print("the destination holds the source's state" if same else "DIGESTS DIFFER")
    return 0 if same and done["src"]["ok"] and done["dst"]["ok"] else 1


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    sys.exit(asyncio.run(main(*sys.argv[1:])))
