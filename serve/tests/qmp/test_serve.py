"""`mdevmig serve` driven by the real QMP client, `qemu.qmp` 0.0.6.

The service speaks the QMP wire protocol (QEMU's docs/interop/qmp-spec.rst),
so these tests talk to it the way management stacks and qmp-shell talk to
QEMU: `qemu.qmp.QMPClient` (asyncio) and `qemu.qmp.legacy.QEMUMonitorProtocol`
(the synchronous shim qmp-shell uses). The one thing qemu.qmp cannot do is
receive an fd with a reply (`device-set-state` hands back the data fd with
SCM_RIGHTS), so the region tests use the small raw client below.

Run through serve/tests/qmp.sh, which builds the binary once and sets
MDEVMIG_BIN and QMP_TEST_DIR. Tests that change uids (access control) need
root and are skipped otherwise.
"""

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from qemu.qmp import EventListener, ExecuteError, QMPClient
from qemu.qmp.legacy import QEMUMonitorProtocol

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
BIN = os.environ.get("MDEVMIG_BIN") or os.path.join(
    os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target")), "debug", "mdevmig"
)
WAIT = 60  # seconds any one step may take on a loaded 2-core machine

GPU0 = "sim:simgpu/vgpu-64m,seed=1"
GPU1 = "sim:simgpu/vgpu-64m,seed=2"
OLD = "sim:simgpu/vgpu-64m,seed=3,versions=1..1"
MTTY0 = "sim:mtty/mtty-2,seed=1"
MTTY1 = "sim:mtty/mtty-2,seed=2"

_work = None
_keys = None
_main = None


def work_dir():
    """A directory for this run: QMP_TEST_DIR, or a fresh one (0711 so that a
    second uid can reach sockets below it)."""
    global _work
    if _work is None:
        base = os.environ.get("QMP_TEST_DIR")
        if base:
            os.makedirs(base, exist_ok=True)
            _work = tempfile.mkdtemp(prefix="run-", dir=base)
        else:
            _work = tempfile.mkdtemp(prefix="mdevmig-qmp-")
        os.chmod(_work, 0o711)
    return _work


def fresh_dir(name):
    d = tempfile.mkdtemp(prefix=name + "-", dir=work_dir())
    os.chmod(d, 0o711)
    return d


def keys():
    """(private key, public key) made once with `mdevmig keygen`."""
    global _keys
    if _keys is None:
        d = fresh_dir("keys")
        subprocess.run([BIN, "keygen", "--out", os.path.join(d, "k")], check=True,
                       stdout=subprocess.DEVNULL)
        _keys = (os.path.join(d, "k.key"), os.path.join(d, "k.pub"))
    return _keys


def cli_json(*args):
    """Runs the CLI with --json: (exit status, the printed object, "ok" and all)."""
    p = subprocess.run([BIN, *args, "--json"], capture_output=True, text=True, timeout=WAIT)
    return p.returncode, json.loads(p.stdout)


def command_table():
    """Every command and its class, read from the contract: COMMANDS in
    serve/src/commands.rs."""
    with open(os.path.join(REPO, "serve", "src", "commands.rs")) as f:
        src = f.read()
    table = src[src.index("pub(crate) const COMMANDS"):]
    table = table[: table.index("];")]
    found = re.findall(r'\(\s*"([a-z_-]+)",\s*Class::(\w+)', table)
    assert len(found) > 10, "could not read COMMANDS from serve/src/commands.rs"
    return dict(found)


class Service:
    """One `mdevmig serve` process with its own socket, state directory and log."""

    def __init__(self, name, devices=(), extra=(), key=True, trust=True, start=True):
        self.dir = fresh_dir(name)
        self.sock = os.path.join(self.dir, "s.sock")
        self.state = os.path.join(self.dir, "state")
        self.log_path = os.path.join(self.dir, "serve.log")
        k, p = keys()
        self.argv = [BIN, "serve", "--socket", self.sock, "--state-dir", self.state]
        if key:
            self.argv += ["--key", k]
        if trust:
            self.argv += ["--trust", p]
        for n, spec in devices:
            self.argv += ["--device", f"{n}={spec}"]
        self.argv += list(extra)
        self.proc = None
        if start:
            self.start()

    def start(self):
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.logf)
        deadline = time.monotonic() + WAIT
        while "listening on" not in self.log():
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}: {self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"serve did not start: {self.log()}")
            time.sleep(0.05)

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def wait_log(self, needle, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while needle not in self.log():
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} never logged:\n{self.log()}")
            time.sleep(0.05)

    def file(self, name):
        """A file that save and restore name: <state-dir>/files/<name>."""
        return os.path.join(self.state, "files", name)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.logf.close()
        return self.proc.returncode if self.proc else None


def main_service():
    global _main
    if _main is None:
        _main = Service("main", devices=[("gpu0", GPU0), ("gpu1", GPU1), ("old", OLD),
                                         ("m0", MTTY0), ("m1", MTTY1)])
    return _main


def tearDownModule():
    if _main is not None:
        _main.stop()


def err_code(e):
    """The service's stable code of a refused command (qemu.qmp ExecuteError)."""
    return e.received["error"]["code"]


async def connect(sock, negotiate=True):
    c = QMPClient("mdevmig-test")
    c.negotiate = negotiate
    await asyncio.wait_for(c.connect(sock), WAIT)
    return c


async def run(c, cmd, args=None):
    return await asyncio.wait_for(c.execute(cmd, args), WAIT)


async def refused(c, cmd, args=None):
    """Runs a command that must fail; returns the ExecuteError."""
    try:
        r = await run(c, cmd, args)
    except ExecuteError as e:
        return e
    raise AssertionError(f"{cmd} {args} was not refused: {r}")


async def job_events(listener, job_id, timeout=WAIT):
    """A job's events, in order, up to and including JOB_FINISHED."""
    evs = []
    while True:
        ev = await asyncio.wait_for(listener.get(), timeout)
        if ev["data"].get("id") != job_id:
            continue
        evs.append(ev)
        if ev["event"] == "JOB_FINISHED":
            return evs


async def next_status(listener, job_id, status, timeout=WAIT):
    while True:
        ev = await asyncio.wait_for(listener.get(), timeout)
        if (ev["event"] == "JOB_STATUS_CHANGE" and ev["data"]["id"] == job_id
                and ev["data"]["status"] == status):
            return ev


async def job(c, listener, cmd, args):
    """Starts a save or restore and waits for it: (events, JOB_FINISHED data)."""
    r = await run(c, cmd, args)
    evs = await job_events(listener, r["job-id"])
    return evs, evs[-1]["data"]


def drain_fd(fd, out=None, delay=0.0):
    """Reads fd to EOF (optionally after a delay), keeping the bytes in `out`."""
    time.sleep(delay)
    while True:
        b = os.read(fd, 1 << 20)
        if not b:
            break
        if out is not None:
            out.append(b)
    os.close(fd)


class RawQMP:
    """A tiny synchronous QMP client that also receives fds (SCM_RIGHTS) with
    replies, which qemu.qmp does not."""

    def __init__(self, path, negotiate=True):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(WAIT)
        self.sock.connect(path)
        self.buf = b""
        self.fds = []
        self.events = []
        self.n = 0
        self.greeting = self._next()
        if negotiate:
            assert self.cmd("qmp_capabilities") == {"return": {}, "id": 1}

    def _next(self):
        while b"\n" not in self.buf:
            data, fds, _, _ = socket.recv_fds(self.sock, 1 << 16, 8)
            if not data:
                raise EOFError("the service closed the connection")
            self.buf += data
            self.fds.extend(fds)
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def cmd_fds(self, name, args=None):
        """Runs a command: (reply, fds that came with it)."""
        self.n += 1
        msg = {"execute": name, "id": self.n}
        if args is not None:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode())
        while True:
            m = self._next()
            if "event" in m:
                self.events.append(m)
                continue
            assert m.get("id") == self.n, m
            fds, self.fds = self.fds, []
            return m, fds

    def cmd(self, name, args=None):
        m, fds = self.cmd_fds(name, args)
        for fd in fds:
            os.close(fd)
        return m

    def ok(self, name, args=None):
        m = self.cmd(name, args)
        assert "return" in m, f"{name} {args}: {m}"
        return m["return"]

    def close(self):
        self.sock.close()


# ---------------------------------------------------------------------------
# Greeting, negotiation, introspection


class Negotiation(unittest.IsolatedAsyncioTestCase):
    async def test_greeting_and_commands_before_negotiation_are_refused(self):
        svc = main_service()
        c = await connect(svc.sock, negotiate=False)
        try:
            g = c.greeting._asdict()["QMP"]
            self.assertEqual(g["capabilities"], [])
            self.assertEqual(set(g["version"]["qemu"]), {"major", "minor", "micro"})
            self.assertTrue(g["version"]["package"].startswith("mdevmig "))
            for cmd in ("query-version", "describe", "save"):
                e = await refused(c, cmd, {"device": "m0"} if cmd != "query-version" else None)
                self.assertEqual(e.error_class, "CommandNotFound", cmd)
                self.assertEqual(err_code(e), "qmp.no_capabilities", cmd)
            self.assertEqual(await run(c, "qmp_capabilities"), {})
            e = await refused(c, "qmp_capabilities")
            self.assertEqual(e.error_class, "CommandNotFound")
            self.assertEqual(err_code(e), "qmp.already_negotiated")
            e = await refused(c, "qmp_capabilities", {"enable": ["oob"]})
            self.assertEqual(err_code(e), "qmp.bad_arguments")
            v = await run(c, "query-version")
            self.assertEqual(v, g["version"])
        finally:
            await c.disconnect()

    async def test_query_version_is_the_cli_version(self):
        c = await connect(main_service().sock)
        try:
            v = await run(c, "query-version")
            cli = subprocess.run([BIN, "--version"], capture_output=True, text=True).stdout.split()[-1]
            self.assertEqual(v["package"], f"mdevmig {cli}")
            major, minor, micro = (int(x) for x in cli.split("."))
            self.assertEqual(v["qemu"], {"major": major, "minor": minor, "micro": micro})
        finally:
            await c.disconnect()

    async def test_query_commands_lists_every_command_root_may_run(self):
        c = await connect(main_service().sock)
        try:
            got = [x["name"] for x in await run(c, "query-commands")]
            self.assertEqual(sorted(got), sorted(command_table()))
            self.assertEqual(len(got), len(set(got)))
        finally:
            await c.disconnect()


class LegacySyncClient(unittest.TestCase):
    """qemu.qmp.legacy.QEMUMonitorProtocol, the synchronous API qmp-shell uses."""

    def test_sync_client_negotiates_queries_and_sees_errors(self):
        svc = main_service()
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        qmp = QEMUMonitorProtocol(svc.sock)
        try:
            greeting = qmp.connect()
            self.assertIn("QMP", greeting)
            self.assertEqual(qmp.cmd("query-version")["package"], greeting["QMP"]["version"]["package"])
            devs = {d["name"]: d for d in qmp.cmd("query-devices") if d.get("kind") == "configured"}
            self.assertEqual(devs["m0"], {"name": "m0", "kind": "configured", "spec": MTTY0, "busy": False})
            self.assertEqual(set(devs), {"gpu0", "gpu1", "old", "m0", "m1"})
            r = qmp.cmd_raw("describe", {"device": "m0"})
            self.assertEqual(r["return"]["device_type"], "mtty-2")
            r = qmp.cmd_raw("no-such-command")
            self.assertEqual(r["error"]["class"], "CommandNotFound")
            self.assertEqual(r["error"]["code"], "qmp.unknown_command")
            r = qmp.cmd_obj({"execute": "query-version", "id": "abc"})
            self.assertEqual(r["id"], "abc")
        finally:
            qmp.close()
            asyncio.set_event_loop(None)
            loop.close()


class DescribeCheckLabels(unittest.IsolatedAsyncioTestCase):
    """describe, check and labels answer exactly what the CLI prints with --json."""

    async def asyncSetUp(self):
        self.svc = main_service()
        self.c = await connect(self.svc.sock)

    async def asyncTearDown(self):
        await self.c.disconnect()

    async def test_describe_equals_the_cli(self):
        for device, spec in (("gpu0", GPU0), ("old", OLD), ("m0", MTTY0),
                             ("sim:xe/xe-vf-64m", "sim:xe/xe-vf-64m")):
            got = await run(self.c, "describe", {"device": device})
            rc, want = cli_json("describe", "--device", spec)
            self.assertEqual(rc, 0)
            self.assertEqual(got, want, device)

    async def test_check_equals_the_cli_compatible_or_not(self):
        source = await run(self.c, "describe", {"device": "gpu0"})
        path = os.path.join(fresh_dir("check"), "source.json")
        with open(path, "w") as f:
            json.dump(source, f)
        cases = [
            # destination, its spec, policy, compatible
            ("gpu1", GPU1, None, True),
            ("old", OLD, None, False),  # loads 1..1 only
            ("sim:simgpu/vgpu-256m", "sim:simgpu/vgpu-256m", None, False),  # another type
            ("m1", MTTY1, None, False),  # another vendor
            ("gpu1", GPU1, {"pin_version": 2, "allow_skip": ["simgpu.telemetry"]}, True),
            ("gpu1", GPU1, {"refuse_versions": [3]}, None),
        ]
        for device, spec, policy, compatible in cases:
            args = {"device": device, "source": source}
            argv = ["check", "--device", spec, "--source", path]
            if policy is not None:
                args["policy"] = policy
                ppath = os.path.join(os.path.dirname(path), "policy.json")
                with open(ppath, "w") as f:
                    json.dump(policy, f)
                argv += ["--policy", ppath]
            got = await run(self.c, "check", args)
            rc, want = cli_json(*argv)
            self.assertEqual(got, want, (device, policy))
            self.assertEqual(rc == 0, got["compatible"], (device, policy, rc))
            if compatible is not None:
                self.assertEqual(got["compatible"], compatible, (device, policy))
        # A type mismatch is a verdict, not an error; the reason code says why.
        got = await run(self.c, "check", {"device": "sim:simgpu/vgpu-256m", "source": source})
        self.assertEqual([r["code"] for r in got["reasons"]], ["compat.type_mismatch"])

    async def test_check_refuses_a_bad_policy_or_source(self):
        source = await run(self.c, "describe", {"device": "gpu0"})
        e = await refused(self.c, "check", {"device": "gpu1", "source": source, "policy": [1]})
        self.assertEqual(err_code(e), "qmp.bad_arguments")
        e = await refused(self.c, "check", {"device": "gpu1", "source": source,
                                            "policy": {"no_such_rule": 1}})
        self.assertNotEqual(err_code(e), "qmp.unknown_command")
        e = await refused(self.c, "check", {"device": "gpu1", "source": {"vendor": 1}})
        self.assertEqual(e.error_class, "GenericError")

    async def test_labels_equal_the_cli(self):
        for device, spec in (("gpu0", GPU0), ("old", OLD), ("m0", MTTY0)):
            got = await run(self.c, "labels", {"device": device})
            rc, want = cli_json("labels", "--device", spec)
            self.assertEqual(rc, 0)
            self.assertEqual(got, want, device)


# ---------------------------------------------------------------------------
# Jobs


class Jobs(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        self.svc = main_service()
        self.c = await connect(self.svc.sock)
        self.events = EventListener()
        self.c.register_listener(self.events)

    async def asyncTearDown(self):
        self.c.remove_listener(self.events)
        await self.c.disconnect()

    def assert_job_events(self, evs, kind):
        names = [(e["event"], e["data"].get("status")) for e in evs]
        statuses = [s for n, s in names if n == "JOB_STATUS_CHANGE"]
        self.assertEqual(statuses, ["created", "running", "concluded"], names)
        self.assertEqual(names[0], ("JOB_STATUS_CHANGE", "created"))
        self.assertEqual(names[1], ("JOB_STATUS_CHANGE", "running"))
        self.assertEqual(names[-2], ("JOB_STATUS_CHANGE", "concluded"))
        self.assertEqual(names[-1][0], "JOB_FINISHED")
        progress = [e["data"] for e in evs if e["event"] == "JOB_PROGRESS"]
        self.assertTrue(progress, names)
        self.assertTrue(all(n == "JOB_PROGRESS" for n, _ in names[2:-2]), names)
        cur = [p["current-progress"] for p in progress]
        self.assertEqual(cur, sorted(cur))
        self.assertGreater(progress[-1]["current-progress"], 0)
        self.assertEqual(progress[-1]["current-progress"], progress[-1]["total-progress"])
        for e in evs:
            ts = e["timestamp"]
            self.assertIsInstance(ts["seconds"], int)
            self.assertTrue(0 <= ts["microseconds"] < 1_000_000)
        fin = evs[-1]["data"]
        self.assertEqual(fin["type"], kind)
        self.assertTrue(fin["ok"], fin)

    async def test_save_to_a_file_restore_elsewhere_query_and_dismiss(self):
        evs, fin = await job(self.c, self.events, "save",
                             {"job-id": "save-gpu0", "device": "gpu0", "file": "gpu0.mig"})
        self.assert_job_events(evs, "save")
        saved = fin["result"]
        self.assertEqual((saved["vendor"], saved["device_type"]), ("simgpu", "vgpu-64m"))
        self.assertRegex(saved["state_digest"], "^[0-9a-f]{64}$")
        self.assertFalse(saved["session_bound"])
        self.assertEqual(os.path.getsize(self.svc.file("gpu0.mig")), evs[-3]["data"]["current-progress"])

        evs, fin = await job(self.c, self.events, "restore",
                             {"job-id": "restore-gpu1", "device": "gpu1", "file": "gpu0.mig"})
        self.assert_job_events(evs, "restore")
        restored = fin["result"]
        self.assertEqual(restored["state_digest"], saved["state_digest"])
        self.assertEqual(restored["stream_id"], saved["stream_id"])
        self.assertEqual(restored["written"], saved["raw_bytes"])

        jobs = {j["id"]: j for j in await run(self.c, "query-jobs")}
        for jid, kind, spec, result in (("save-gpu0", "save", GPU0, saved),
                                        ("restore-gpu1", "restore", GPU1, restored)):
            j = jobs[jid]
            self.assertEqual((j["type"], j["status"], j["device"]), (kind, "concluded", spec))
            self.assertEqual(j["result"], result)
            self.assertEqual(j["current-progress"], j["total-progress"])
        e = await refused(self.c, "job-cancel", {"id": "save-gpu0"})
        self.assertEqual(err_code(e), "qmp.job_state")
        e = await refused(self.c, "save", {"job-id": "save-gpu0", "device": "m0", "file": "x"})
        self.assertEqual(err_code(e), "qmp.bad_arguments")  # the id is taken

        self.assertEqual(await run(self.c, "job-dismiss", {"id": "save-gpu0"}), {})
        ev = await next_status(self.events, "save-gpu0", "null")
        self.assertEqual(ev["data"], {"id": "save-gpu0", "status": "null"})
        ids = [j["id"] for j in await run(self.c, "query-jobs")]
        self.assertNotIn("save-gpu0", ids)
        self.assertIn("restore-gpu1", ids)
        e = await refused(self.c, "job-dismiss", {"id": "save-gpu0"})
        self.assertEqual(err_code(e), "qmp.no_such_job")
        await run(self.c, "job-dismiss", {"id": "restore-gpu1"})

    async def test_save_and_restore_through_passed_fds(self):
        # save into a pipe the test reads: SCM_RIGHTS, then getfd, then fdname.
        r, w = os.pipe()
        self.c.send_fd_scm(w)
        os.close(w)
        self.assertEqual(await run(self.c, "getfd", {"fdname": "out"}), {})
        chunks = []
        reader = threading.Thread(target=drain_fd, args=(r, chunks))
        reader.start()
        evs, fin = await job(self.c, self.events, "save", {"device": "m0", "fdname": "out"})
        self.assert_job_events(evs, "save")
        await asyncio.to_thread(reader.join, WAIT)
        stream = b"".join(chunks)
        self.assertEqual(len(stream), evs[-3]["data"]["current-progress"])
        digest = fin["result"]["state_digest"]
        e = await refused(self.c, "closefd", {"fdname": "out"})
        self.assertEqual(err_code(e), "qmp.no_such_fd")  # the save took it

        # restore from a file the test opens and passes.
        path = os.path.join(fresh_dir("fd"), "m0.mig")
        with open(path, "wb") as f:
            f.write(stream)
        fd = os.open(path, os.O_RDONLY)
        try:
            self.c.send_fd_scm(fd)
        finally:
            os.close(fd)
        await run(self.c, "getfd", {"fdname": "in"})
        evs, fin = await job(self.c, self.events, "restore", {"device": "m1", "fdname": "in"})
        self.assert_job_events(evs, "restore")
        self.assertEqual(fin["result"]["state_digest"], digest)

        e = await refused(self.c, "getfd", {"fdname": "nothing-sent"})
        self.assertEqual(err_code(e), "qmp.no_such_fd")
        e = await refused(self.c, "save", {"device": "m0", "fdname": "never-named"})
        self.assertEqual(err_code(e), "qmp.no_such_fd")

    async def test_session_bound_migration(self):
        s = await run(self.c, "session-new")
        self.assertRegex(s["nonce"], "^[0-9a-f]{64}$")
        self.assertGreater(s["expires-in"], 0)
        _, fin = await job(self.c, self.events, "save",
                           {"device": "m0", "file": "bound.mig", "session": s["nonce"]})
        self.assertTrue(fin["ok"], fin)
        self.assertTrue(fin["result"]["session_bound"])
        digest = fin["result"]["state_digest"]
        _, fin = await job(self.c, self.events, "restore",
                           {"device": "m1", "file": "bound.mig", "session": s["nonce"]})
        self.assertTrue(fin["ok"], fin)
        self.assertEqual(fin["result"]["state_digest"], digest)
        # A nonce is good for one restore; one this service never issued for none.
        e = await refused(self.c, "restore", {"device": "m1", "file": "bound.mig", "session": s["nonce"]})
        self.assertEqual(err_code(e), "qmp.bad_session")
        e = await refused(self.c, "restore", {"device": "m1", "file": "bound.mig",
                                              "session": secrets.token_hex(32)})
        self.assertEqual(err_code(e), "qmp.bad_session")
        # The stream is bound to the nonce: another issued nonce does not open it.
        other = (await run(self.c, "session-new"))["nonce"]
        _, fin = await job(self.c, self.events, "restore",
                           {"device": "m1", "file": "bound.mig", "session": other})
        self.assertFalse(fin["ok"], fin)

    async def test_a_refused_restore_does_not_use_up_the_nonce(self):
        # The source bound its stream to the nonce; a restore refused before it
        # starts (a mistyped file name, a bad path) must leave the nonce usable,
        # or the whole save has to be redone.
        nonce = (await run(self.c, "session-new"))["nonce"]
        _, fin = await job(self.c, self.events, "save",
                           {"device": "m0", "file": "bound-2.mig", "session": nonce})
        self.assertTrue(fin["ok"], fin)
        e = await refused(self.c, "restore", {"device": "m1", "file": "no-such.mig", "session": nonce})
        self.assertEqual(err_code(e), "io.open")
        e = await refused(self.c, "restore", {"device": "m1", "file": "../bound-2.mig", "session": nonce})
        self.assertEqual(err_code(e), "qmp.bad_path")
        _, fin = await job(self.c, self.events, "restore",
                           {"device": "m1", "file": "bound-2.mig", "session": nonce})
        self.assertTrue(fin["ok"], fin)

    async def test_cancel_a_running_save_and_the_source_still_saves(self):
        _, before = await job(self.c, self.events, "save", {"device": "gpu0", "file": "before.mig"})
        self.assertTrue(before["ok"], before)
        # A pipe nobody reads yet: the save fills it and blocks, still running.
        r, w = os.pipe()
        self.c.send_fd_scm(w)
        os.close(w)
        await run(self.c, "getfd", {"fdname": "slow"})
        await run(self.c, "save", {"job-id": "to-cancel", "device": "gpu0", "fdname": "slow"})
        await next_status(self.events, "to-cancel", "running")
        e = await refused(self.c, "save", {"device": "gpu0", "file": "busy.mig"})
        self.assertEqual(err_code(e), "qmp.device_busy")
        self.assertEqual(await run(self.c, "job-cancel", {"id": "to-cancel"}), {})
        await next_status(self.events, "to-cancel", "aborting")
        self.assertEqual({j["id"]: j["status"] for j in await run(self.c, "query-jobs")}["to-cancel"],
                         "aborting")
        reader = threading.Thread(target=drain_fd, args=(r,))
        reader.start()
        evs = await job_events(self.events, "to-cancel")
        statuses = [e["data"]["status"] for e in evs if e["event"] == "JOB_STATUS_CHANGE"]
        self.assertEqual(statuses, ["concluded"])
        fin = evs[-1]["data"]
        self.assertFalse(fin["ok"])
        self.assertEqual(fin["error"]["code"], "qmp.cancelled")
        self.assertEqual(fin["error"]["class"], "GenericError")
        await asyncio.to_thread(reader.join, WAIT)
        j = {j["id"]: j for j in await run(self.c, "query-jobs")}["to-cancel"]
        self.assertEqual((j["status"], j["error-code"]), ("concluded", "qmp.cancelled"))
        _, after = await job(self.c, self.events, "save", {"device": "gpu0", "file": "after.mig"})
        self.assertTrue(after["ok"], after)
        self.assertEqual(after["result"]["state_digest"], before["result"]["state_digest"])


class JobsRightAfterConcluded(unittest.TestCase):
    """A client may act on a job as soon as it sees it concluded (QEMU's
    qapi/job.json: a concluded job accepts dismiss, and refuses cancel). The raw
    client answers fastest, so these catch a service that is still finishing
    the job after it said so."""

    ROUNDS = 20

    def saves(self, q, prefix):
        """Runs short saves; yields each job id as its 'concluded' event arrives."""
        for i in range(self.ROUNDS):
            jid = q.ok("save", {"device": "m0", "file": f"{prefix}-{i}.mig", "job-id": f"{prefix}-{i}"})["job-id"]
            while True:
                m = q.events.pop(0) if q.events else q._next()
                if m.get("event") == "JOB_STATUS_CHANGE" and m["data"] == {"id": jid, "status": "concluded"}:
                    break
            yield jid

    def test_dismiss_as_soon_as_concluded(self):
        q = RawQMP(main_service().sock)
        try:
            for jid in self.saves(q, "dismiss"):
                r = q.cmd("job-dismiss", {"id": jid})
                self.assertEqual(r.get("return"), {}, (jid, r))
        finally:
            q.close()

    def test_cancel_as_soon_as_concluded_is_refused_and_the_job_stays_concluded(self):
        q = RawQMP(main_service().sock)
        try:
            for jid in self.saves(q, "late-cancel"):
                r = q.cmd("job-cancel", {"id": jid})
                self.assertEqual(r.get("error", {}).get("code"), "qmp.job_state", (jid, r))
                j = {j["id"]: j for j in q.ok("query-jobs")}[jid]
                self.assertEqual(j["status"], "concluded", j)
                self.assertIn("result", j)
            late = [m for m in q.events if m.get("event") == "JOB_STATUS_CHANGE"
                    and m["data"]["status"] == "aborting"]
            self.assertEqual(late, [])
        finally:
            q.close()

    def test_a_client_leaving_after_job_finished_cancels_nothing(self):
        svc = main_service()
        for i in range(self.ROUNDS):
            q = RawQMP(svc.sock)
            jid = q.ok("save", {"device": "m0", "file": f"leave-{i}.mig", "job-id": f"leave-{i}"})["job-id"]
            while True:
                m = q.events.pop(0) if q.events else q._next()
                if m.get("event") == "JOB_FINISHED" and m["data"]["id"] == jid:
                    break
            q.close()
        q = RawQMP(svc.sock)
        try:
            jobs = {j["id"]: j for j in q.ok("query-jobs")}
            for i in range(self.ROUNDS):
                j = jobs[f"leave-{i}"]
                self.assertEqual((j["status"], "result" in j), ("concluded", True), j)
        finally:
            q.close()
        self.assertNotIn("cancelling its job \"leave-", svc.log())


# ---------------------------------------------------------------------------
# Errors


class Errors(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        self.svc = main_service()
        self.c = await connect(self.svc.sock)
        self.events = EventListener()
        self.c.register_listener(self.events)

    async def asyncTearDown(self):
        self.c.remove_listener(self.events)
        await self.c.disconnect()

    async def test_unknown_command(self):
        e = await refused(self.c, "migrate-everything")
        self.assertEqual(e.error_class, "CommandNotFound")
        self.assertEqual(err_code(e), "qmp.unknown_command")
        self.assertTrue(e.received["error"]["desc"].startswith("error[qmp.unknown_command]: "))

    async def test_bad_arguments(self):
        cases = [
            ("describe", {}),  # missing
            ("describe", {"device": 7}),  # wrong type
            ("describe", {"device": "m0", "colour": "blue"}),  # unexpected
            ("save", {"device": "m0"}),  # neither file nor fdname
            ("save", {"device": "m0", "file": "a", "fdname": "b"}),  # both
            ("query-version", {"x": 1}),
            ("device-set-state", {"id": "r", "state": "flying"}),
            ("save", {"device": "m0", "file": "x", "job-id": "has space"}),
        ]
        for cmd, args in cases:
            e = await refused(self.c, cmd, args)
            self.assertEqual((e.error_class, err_code(e)), ("GenericError", "qmp.bad_arguments"),
                             (cmd, args))
        for name in ("../escape", "/etc/passwd", ".hidden", "a/b"):
            e = await refused(self.c, "save", {"device": "m0", "file": name})
            self.assertEqual(err_code(e), "qmp.bad_path", name)

    async def test_unknown_device_spec_has_the_cli_code(self):
        for spec in ("sim:nope/none", "sim:simgpu/vgpu-nope", "not-a-device"):
            e = await refused(self.c, "describe", {"device": spec})
            rc, cli = cli_json("describe", "--device", spec)
            self.assertNotEqual(rc, 0)
            self.assertEqual(err_code(e), cli["error"]["code"], spec)
            self.assertEqual(e.error_class, "GenericError")

    async def test_a_tampered_stream_is_refused_and_the_destination_is_unchanged(self):
        _, fin = await job(self.c, self.events, "save", {"device": "m1", "file": "m1-before.mig"})
        before = fin["result"]["state_digest"]
        _, fin = await job(self.c, self.events, "save", {"device": "m0", "file": "m0.mig"})
        self.assertNotEqual(fin["result"]["state_digest"], before)
        with open(self.svc.file("m0.mig"), "rb") as f:
            data = bytearray(f.read())
        for at in (len(data) // 2, 40, len(data) - 5):
            bad = bytearray(data)
            bad[at] ^= 0x20
            name = f"tampered-{at}.mig"
            with open(self.svc.file(name), "wb") as f:
                f.write(bad)
            _, fin = await job(self.c, self.events, "restore", {"device": "m1", "file": name})
            self.assertFalse(fin["ok"], (at, fin))
            self.assertRegex(fin["error"]["code"], r"^(auth|format)\.", at)
            _, fin = await job(self.c, self.events, "save", {"device": "m1", "file": f"m1-after-{at}.mig"})
            self.assertEqual(fin["result"]["state_digest"], before, at)


# ---------------------------------------------------------------------------
# The migration region over the socket (raw client: fds come back with replies)


def migrate_region(test, q, src_spec, dst_spec):
    """Opens a source and a destination region on `q`, moves the state through
    the data fds, and returns the source's digest."""
    src = q.ok("device-open", {"id": "src", "device": src_spec})
    test.assertEqual(src["state"], "running")
    test.assertIn("STOP_COPY", src["migration-flags"])
    q.ok("device-open", {"id": "dst", "device": dst_spec})
    want = q.ok("device-query", {"id": "src"})["state-digest"]
    test.assertNotEqual(q.ok("device-query", {"id": "dst"})["state-digest"], want)

    r, fds = q.cmd_fds("device-set-state", {"id": "src", "state": "stop-copy"})
    test.assertEqual(r["return"], {"state": "stop-copy", "data-fd": True}, r)
    test.assertEqual(len(fds), 1)
    src_fd = fds[0]
    r, fds = q.cmd_fds("device-set-state", {"id": "dst", "state": "resuming"})
    test.assertEqual(r["return"], {"state": "resuming", "data-fd": True}, r)
    test.assertEqual(len(fds), 1)
    dst_fd = fds[0]
    os.set_blocking(src_fd, True)
    os.set_blocking(dst_fd, True)
    moved = 0
    while True:
        b = os.read(src_fd, 1 << 20)
        if not b:
            break
        view = memoryview(b)
        while view:
            n = os.write(dst_fd, view)
            view = view[n:]
        moved += len(b)
    os.close(src_fd)
    os.close(dst_fd)
    test.assertGreater(moved, 0)

    test.assertEqual(q.ok("device-set-state", {"id": "src", "state": "stop"}),
                     {"state": "stop", "data-fd": False})
    test.assertEqual(q.ok("device-set-state", {"id": "dst", "state": "stop"})["state"], "stop")
    test.assertEqual(q.ok("device-set-state", {"id": "dst", "state": "running"})["state"], "running")
    dq = q.ok("device-query", {"id": "dst"})
    test.assertEqual(dq["state-digest"], want)
    test.assertEqual(dq["state"], "running")
    test.assertEqual(dq["device"], dst_spec)
    test.assertIn(["resuming", "stop"], dq["arcs"])
    q.ok("device-close", {"id": "src"})
    q.ok("device-close", {"id": "dst"})
    return want


class Regions(unittest.TestCase):
    def test_region_migration_through_the_data_fds(self):
        svc = main_service()
        q = RawQMP(svc.sock)
        try:
            migrate_region(self, q, GPU0, GPU1)
            r = q.cmd("device-query", {"id": "src"})
            self.assertEqual(r["error"]["code"], "qmp.no_such_device")
            r = q.cmd("device-open", {"id": "x", "device": "gpu0"})
            self.assertEqual(r["error"]["code"], "qmp.bad_arguments")  # a configured device
        finally:
            q.close()

    def test_a_client_that_goes_away_mid_migration_breaks_nothing(self):
        svc = main_service()
        q = RawQMP(svc.sock)
        q.ok("device-open", {"id": "src", "device": GPU0})
        q.ok("device-open", {"id": "dst", "device": GPU1})
        _, fds = q.cmd_fds("device-set-state", {"id": "src", "state": "stop-copy"})
        src_fd = fds[0]
        _, fds = q.cmd_fds("device-set-state", {"id": "dst", "state": "resuming"})
        dst_fd = fds[0]
        os.set_blocking(src_fd, True)
        part = os.read(src_fd, 1 << 16)
        self.assertTrue(part)
        os.write(dst_fd, part)
        q.close()
        os.close(src_fd)
        os.close(dst_fd)
        svc.wait_log("went away; abandoning region \"src\"")
        svc.wait_log("went away; abandoning region \"dst\"")

        q = RawQMP(svc.sock)
        try:
            src = q.ok("device-open", {"id": "src", "device": GPU0})
            self.assertEqual(src["state"], "running")
            q.ok("device-close", {"id": "src"})
            migrate_region(self, q, MTTY0, MTTY1)
        finally:
            q.close()

    def test_a_client_that_goes_away_cancels_its_job(self):
        svc = main_service()
        q = RawQMP(svc.sock)
        r, w = os.pipe()
        socket.send_fds(q.sock, [b" "], [w])
        os.close(w)
        q.ok("getfd", {"fdname": "w"})
        jid = q.ok("save", {"device": "gpu0", "fdname": "w"})["job-id"]
        deadline = time.monotonic() + WAIT
        while True:  # until the save has filled the pipe
            j = {j["id"]: j for j in q.ok("query-jobs")}[jid]
            if j["status"] == "running" and j["current-progress"] > 0:
                break
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.05)
        q.close()
        svc.wait_log(f"went away; cancelling its job \"{jid}\"")
        reader = threading.Thread(target=drain_fd, args=(r,))
        reader.start()
        reader.join(WAIT)
        q = RawQMP(svc.sock)
        try:
            deadline = time.monotonic() + WAIT
            while True:
                j = {j["id"]: j for j in q.ok("query-jobs")}[jid]
                if j["status"] == "concluded":
                    break
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.05)
            self.assertEqual(j["error-code"], "qmp.cancelled")
            devs = {d["name"]: d for d in q.ok("query-devices") if d.get("kind") == "configured"}
            self.assertFalse(devs["gpu0"]["busy"])
            self.assertEqual(q.ok("describe", {"device": "gpu0"})["device_type"], "vgpu-64m")
        finally:
            q.close()


# ---------------------------------------------------------------------------
# Access control: peers of other uids (needs root)


def as_uid(uid, gid, fn):
    """Runs fn() in a child process with this uid and gid (no supplementary
    groups); returns what it returned (JSON), or raises what it raised."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            # A loop of its own: the parent's would share its epoll fd.
            asyncio.set_event_loop(asyncio.new_event_loop())
            out = {"ok": fn()}
        except BaseException as e:  # noqa: B902 - reported to the parent
            out = {"raised": f"{type(e).__name__}: {e}"}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    out = json.loads(data)
    if "raised" in out:
        raise AssertionError(f"as uid {uid}: {out['raised']}")
    return out["ok"]


NOBODY = 65534
NOGROUP = 65534
STRANGER = 4242


@unittest.skipUnless(os.geteuid() == 0, "needs root to act as other uids")
class AccessControl(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        d = fresh_dir("policy")
        cls.policy = os.path.join(d, "access.json")
        with open(cls.policy, "w") as f:
            json.dump({"query": {"users": ["nobody"]}, "migrate": {"uids": [4343]}}, f)
        os.chmod(cls.policy, 0o644)
        cls.svc = Service("access", devices=[("m0", MTTY0), ("m1", MTTY1)],
                          extra=["--access", cls.policy, "--socket-group", str(NOGROUP)])

    @classmethod
    def tearDownClass(cls):
        cls.svc.stop()

    def test_socket_is_0660_with_the_configured_group(self):
        st = os.stat(self.svc.sock)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o660)
        self.assertEqual(st.st_gid, NOGROUP)

    def test_a_query_only_uid_may_check_but_not_save(self):
        sock = self.svc.sock

        def client():
            qmp = QEMUMonitorProtocol(sock)
            qmp.connect()
            try:
                src = qmp.cmd("describe", device="m0")
                return {
                    "commands": sorted(c["name"] for c in qmp.cmd("query-commands")),
                    "check": qmp.cmd("check", device="m1", source=src),
                    "save": qmp.cmd_raw("save", {"device": "m0", "file": "x.mig"}),
                    "session": qmp.cmd_raw("session-new"),
                }
            finally:
                qmp.close()

        got = as_uid(NOBODY, NOGROUP, client)
        table = command_table()
        self.assertEqual(got["commands"],
                         sorted(n for n, c in table.items() if c in ("Always", "Query")))
        self.assertTrue(got["check"]["compatible"], got["check"])
        for what in ("save", "session"):
            self.assertEqual(got[what]["error"]["code"], "qmp.access_denied", got[what])
        self.assertFalse(os.path.exists(self.svc.file("x.mig")))
        self.svc.wait_log('refused "save": uid 65534 gid 65534 may not run save (it needs the migrate right)')
        self.assertIn("(uid 65534, gid 65534, pid", self.svc.log())

    def test_a_uid_not_in_the_policy_gets_nothing(self):
        sock = self.svc.sock

        def client():
            qmp = QEMUMonitorProtocol(sock)
            qmp.connect()  # negotiation is open to every peer
            try:
                return {
                    "commands": sorted(c["name"] for c in qmp.cmd("query-commands")),
                    "describe": qmp.cmd_raw("describe", {"device": "m0"}),
                    "jobs": qmp.cmd_raw("query-jobs"),
                }
            finally:
                qmp.close()

        got = as_uid(STRANGER, NOGROUP, client)
        table = command_table()
        self.assertEqual(got["commands"], sorted(n for n, c in table.items() if c == "Always"))
        for what in ("describe", "jobs"):
            self.assertEqual(got[what]["error"]["code"], "qmp.access_denied", got[what])
            self.assertEqual(got[what]["error"]["class"], "GenericError")
        self.svc.wait_log('refused "describe": uid 4242 gid 65534')

    def test_a_migrate_uid_may_save(self):
        sock = self.svc.sock

        def client():
            qmp = QEMUMonitorProtocol(sock)
            qmp.connect()
            try:
                r = qmp.cmd("save", **{"device": "m0", "file": "by-4343.mig", "job-id": "j4343"})
                for _ in range(200):
                    j = {j["id"]: j for j in qmp.cmd("query-jobs")}.get("j4343")
                    if j and j["status"] == "concluded":
                        return {"reply": r, "job": j}
                    time.sleep(0.05)
                return {"reply": r, "job": None}
            finally:
                qmp.close()

        got = as_uid(4343, NOGROUP, client)
        self.assertIsNotNone(got["job"])
        self.assertIn("result", got["job"], got["job"])
        self.assertTrue(os.path.exists(self.svc.file("by-4343.mig")))

    def test_a_policy_writable_by_others_is_refused_at_start(self):
        d = fresh_dir("loose")
        loose = os.path.join(d, "access.json")
        with open(self.policy) as f, open(loose, "w") as g:
            g.write(f.read())
        os.chmod(loose, 0o666)
        svc = Service("loose", devices=[("m0", MTTY0)], extra=["--access", loose], start=False)
        p = subprocess.run(svc.argv, capture_output=True, text=True, timeout=WAIT)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("access.json", p.stderr)
        self.assertIn("writable", p.stderr)
        self.assertFalse(os.path.exists(svc.sock))


class ExampleInTheReadme(unittest.TestCase):
    def test_the_example_migrates_between_two_services(self):
        src = Service("example-src", devices=[("vm0", MTTY0)])
        dst = Service("example-dst", devices=[("vm0", MTTY1)])
        try:
            p = subprocess.run([sys.executable, os.path.join(HERE, "example_migrate.py"),
                                src.sock, dst.sock, "vm0"],
                               capture_output=True, text=True, timeout=WAIT)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            self.assertIn("the destination holds the source's state", p.stdout)
        finally:
            src.stop()
            dst.stop()


# ---------------------------------------------------------------------------
# systemd socket activation


class SystemdActivation(unittest.IsolatedAsyncioTestCase):
    async def test_the_service_serves_the_socket_it_is_handed(self):
        await self.activated("systemd", ["--systemd"])

    async def test_activation_is_seen_without_the_flag_as_systemd_socket_activate_runs_it(self):
        # `systemd-socket-activate -l PATH mdevmig serve --socket PATH`, or no flag at all.
        await self.activated("activate-socket", ["--socket", "@PATH@"])
        await self.activated("activate-bare", [])

    async def activated(self, tag, flags):
        d = fresh_dir(tag)
        path = os.path.join(d, "activated.sock")
        log_path = os.path.join(d, "serve.log")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(16)
        flags = [path if f == "@PATH@" else f for f in flags]
        argv = [BIN, "serve", *flags, "--state-dir", os.path.join(d, "state"),
                "--key", keys()[0], "--trust", keys()[1], "--device", f"m0={MTTY0}"]
        logfd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        pid = os.fork()
        if pid == 0:
            try:
                os.dup2(listener.fileno(), 3)
                os.dup2(logfd, 2)
                env = dict(os.environ, LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
                env.pop("LISTEN_FDNAMES", None)
                os.execve(BIN, argv, env)
            finally:
                os._exit(127)
        os.close(logfd)
        listener.close()
        try:
            c = await connect(path)
            try:
                self.assertEqual((await run(c, "query-version"))["package"][:8], "mdevmig ")
                self.assertEqual((await run(c, "describe", {"device": "m0"}))["device_type"], "mtty-2")
            finally:
                await c.disconnect()
        finally:
            os.kill(pid, signal.SIGTERM)
            _, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)
        with open(log_path) as f:
            self.assertIn("listening on the socket systemd passed", f.read())

    async def test_without_a_passed_socket_it_refuses_to_start(self):
        d = fresh_dir("systemd-none")
        env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
        p = subprocess.run([BIN, "serve", "--systemd", "--state-dir", os.path.join(d, "state")],
                           capture_output=True, text=True, env=env, timeout=WAIT)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("LISTEN_FDS", p.stderr)


# ---------------------------------------------------------------------------
# SIGTERM: drain


class Drain(unittest.IsolatedAsyncioTestCase):
    async def test_sigterm_refuses_new_work_lets_the_job_finish_and_exits_0(self):
        svc = Service("drain", devices=[("gpu0", GPU0), ("m0", MTTY0)])
        try:
            c = await connect(svc.sock)
            events = EventListener()
            c.register_listener(events)
            r, w = os.pipe()
            c.send_fd_scm(w)
            os.close(w)
            await run(c, "getfd", {"fdname": "slow"})
            await run(c, "save", {"job-id": "long", "device": "gpu0", "fdname": "slow"})
            await next_status(events, "long", "running")

            svc.proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(svc.wait_log, "draining: 1 job(s) running")
            e = await refused(c, "save", {"device": "m0", "file": "late.mig"})
            self.assertEqual(err_code(e), "qmp.shutting_down")
            e = await refused(c, "device-open", {"id": "late", "device": MTTY1})
            self.assertEqual(err_code(e), "qmp.shutting_down")
            self.assertEqual({j["id"]: j["status"] for j in await run(c, "query-jobs")},
                             {"long": "running"})

            chunks = []
            reader = threading.Thread(target=drain_fd, args=(r, chunks))
            reader.start()
            evs = await job_events(events, "long")
            fin = evs[-1]["data"]
            self.assertTrue(fin["ok"], fin)
            await asyncio.to_thread(reader.join, WAIT)
            self.assertEqual(sum(map(len, chunks)), evs[-3]["data"]["current-progress"])
            with contextlib.suppress(Exception):
                await c.disconnect()
            rc = await asyncio.to_thread(svc.proc.wait, WAIT)
            self.assertEqual(rc, 0, svc.log())
            self.assertFalse(os.path.exists(svc.sock))
            log = svc.log()
            self.assertIn('job "long" completed', log)
            self.assertNotIn("drain time is up", log)
            self.assertTrue(log.rstrip().endswith("stopped"), log)
        finally:
            svc.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
