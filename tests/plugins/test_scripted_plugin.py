#!/usr/bin/env python3
"""Self-test of scripted-plugin.py: it must behave as an SDK-built Launcher plugin does.

Run with ``python3 tests/plugins/test_scripted_plugin.py``. Standard library only.
"""

import datetime
import getpass
import json
import os
import queue
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

PLUGIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripted-plugin.py")
DEADLINE = 10.0


class PluginProcess:
    """A running plugin with a reader thread that queues every message it writes."""

    def __init__(self, config_dir, scratch, extra_args=(), name="t"):
        args = [
            sys.executable,
            PLUGIN,
            f"--plugin-name={name}",
            f"--scratch-path={scratch}",
            "--heartbeat-interval-seconds=0",
            f"--server-user={getpass.getuser()}",
            "--unprivileged=1",
            *extra_args,
        ]
        env = dict(os.environ, RSTUDIO_CONFIG_DIR=config_dir)
        self.proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        self.messages = queue.Queue()
        self.next_id = 0
        self.backlog = []
        self.stderr = b""
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read(self):
        out = self.proc.stdout
        while True:
            header = out.read(4)
            if len(header) < 4:
                self.messages.put(None)
                return
            (length,) = struct.unpack(">I", header)
            self.messages.put(json.loads(out.read(length)))

    def _read_stderr(self):
        self.stderr = self.proc.stderr.read()

    def send_raw(self, body):
        self.proc.stdin.write(struct.pack(">I", len(body)) + body)
        self.proc.stdin.flush()

    def send(self, message_type, **payload):
        self.next_id += 1
        message = {"messageType": message_type, "requestId": self.next_id, **payload}
        self.send_raw(json.dumps(message).encode())
        return self.next_id

    def expect(self, predicate, what, timeout=DEADLINE):
        """The first message that satisfies `predicate`; the others stay for later calls."""
        for i, m in enumerate(self.backlog):
            if predicate(m):
                return self.backlog.pop(i)
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}")
            try:
                m = self.messages.get(timeout=left)
            except queue.Empty:
                raise AssertionError(f"timed out waiting for {what}") from None
            if m is None:
                raise AssertionError(f"plugin closed its output while waiting for {what}")
            if predicate(m):
                return m
            self.backlog.append(m)

    def call(self, message_type, **payload):
        rid = self.send(message_type, **payload)
        return self.expect(lambda m: m.get("requestId") == rid, f"the answer to request {rid}")

    def wait(self, timeout=DEADLINE):
        return self.proc.wait(timeout=timeout)

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass


def parse(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def who(**fields):
    return {"requestUsername": "alice", "username": "alice", **fields}


def job_request(job_id, **fields):
    return who(jobId=job_id, encodedJobId=job_id, **fields)


class ScriptedPluginTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="scripted-plugin-test-")
        self.config_dir = os.path.join(self.dir, "etc")
        self.scratch = os.path.join(self.dir, "scratch")
        os.makedirs(self.config_dir)
        self.plugins = []

    def tearDown(self):
        for p in self.plugins:
            p.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def conf(self, text, name="t"):
        with open(os.path.join(self.config_dir, f"launcher.{name}.conf"), "w") as f:
            f.write(text)

    def start(self, *extra_args):
        p = PluginProcess(self.config_dir, self.scratch, extra_args)
        self.plugins.append(p)
        return p

    def bootstrap(self, p):
        r = p.call(1, version={"major": 3, "minor": 4, "patch": 0})
        self.assertEqual(r["messageType"], 1, r)
        return r

    def submit(self, p, command, name="job", tags=()):
        r = p.call(2, requestUsername="alice", username="alice",
                   job={"name": name, "cluster": "T", "user": "alice", "command": command, "tags": list(tags)})
        self.assertEqual(r["messageType"], 2, r)
        return r["jobs"][0]

    def test_bootstrap_and_version_mismatch(self):
        p = self.start()
        r = self.bootstrap(p)
        self.assertEqual(r["version"], {"major": 3, "minor": 4, "patch": 0})
        self.assertEqual(r["responseId"], 1)
        r = p.call(1, version={"major": 2, "minor": 0, "patch": 0})
        self.assertEqual((r["messageType"], r["errorCode"]), (-1, 10), r)
        self.assertEqual(r["responseId"], 2)
        r = p.call(0)
        self.assertEqual((r["messageType"], r["responseId"]), (0, 3))

    def test_exit_code_job_status_stream(self):
        p = self.start()
        self.bootstrap(p)
        stream = p.send(4, **job_request("*", cancel=False))
        job = self.submit(p, "exit 3", name="three", tags=["launcher-job:L1"])
        self.assertEqual(job["status"], "Pending")
        self.assertEqual(job["tags"], ["launcher-job:L1"])
        seen = []
        while not seen or seen[-1]["status"] != "Finished":
            m = p.expect(lambda m: m["messageType"] == 3 and m.get("id") == job["id"], "a status of the job")
            self.assertEqual(m["requestId"], 0)
            self.assertEqual([s["requestId"] for s in m["sequences"]], [stream])
            seen.append(m)
        self.assertEqual([m["status"] for m in seen], ["Pending", "Running", "Finished"])
        self.assertEqual(seen[-1]["exitCode"], 3)
        seqs = [m["sequences"][0]["seqId"] for m in seen]
        self.assertEqual(seqs, sorted(seqs))
        for m in seen:
            for k in ("id", "name", "status", "statusMessage", "lastUpdateTime"):
                self.assertIn(k, m)
        # A new stream on the job starts at seqId 1 with the current status.
        s2 = p.send(4, **job_request(job["id"], cancel=False))
        m = p.expect(lambda m: m["messageType"] == 3, "the current status")
        self.assertEqual((m["status"], m["sequences"]), ("Finished", [{"requestId": s2, "seqId": 1}]))
        # Output of a finished job, both streams, completed.
        rid = p.send(6, **job_request(job["id"], outputType=2, cancel=False))
        a = p.expect(lambda m: m["requestId"] == rid, "stdout")
        b = p.expect(lambda m: m["requestId"] == rid, "stderr")
        self.assertEqual((a["output"], a["outputType"], a["complete"]), ("output of three\n", "stdout", False))
        self.assertEqual((b["output"], b["outputType"], b["complete"]), ("errors of three\n", "stderr", True))

    def test_get_job_by_tags_and_fields(self):
        p = self.start()
        self.bootstrap(p)
        a = self.submit(p, "exit 0", name="a", tags=["launcher-job:A", "x"])
        b = self.submit(p, "exit 0", name="b", tags=["launcher-job:B", "x"])
        r = p.call(3, **job_request("*", tags=["launcher-job:B"]))
        self.assertEqual([j["id"] for j in r["jobs"]], [b["id"]])
        r = p.call(3, **job_request("*", tags=["x"], fields=["name"]))
        self.assertEqual(r["jobs"], [{"id": a["id"], "name": "a"}, {"id": b["id"], "name": "b"}])
        r = p.call(3, **job_request("*", tags=["launcher-job:nope"]))
        self.assertEqual(r["jobs"], [])
        r = p.call(3, **job_request("sp-999"))
        self.assertEqual((r["messageType"], r["errorCode"]), (-1, 3))

    def test_control_output_and_resource_streams(self):
        p = self.start()
        self.bootstrap(p)
        job = self.submit(p, "sleep 30", name="long")
        r = p.call(5, **job_request(job["id"], operation=0))
        self.assertEqual((r["messageType"], r["errorCode"]), (-1, 6), "suspend while Pending")
        time.sleep(0.4)  # Pending lasts 0.2 s
        out = p.send(6, **job_request(job["id"], outputType=0, cancel=False))
        m = p.expect(lambda m: m["requestId"] == out, "live output")
        self.assertEqual((m["output"], m["complete"]), ("output of long\n", False))
        util = p.send(7, **job_request(job["id"], cancel=False))
        m = p.expect(lambda m: m["messageType"] == 6, "resource figures")
        self.assertEqual(m["sequences"], [{"requestId": util, "seqId": 1}])
        self.assertEqual((m["cpuPercent"], m["residentMemory"], m["complete"]), (1.5, 5, False))
        r = p.call(5, **job_request(job["id"], operation=0))
        self.assertEqual((r["messageType"], r["operationComplete"]), (4, True), r)
        r = p.call(5, **job_request(job["id"], operation=1))
        self.assertEqual(r["messageType"], 4)
        r = p.call(5, **job_request(job["id"], operation=4))
        self.assertEqual((r["messageType"], r["errorCode"]), (-1, 8), "cancel while Running")
        r = p.call(5, **job_request(job["id"], operation=3))
        self.assertEqual(r["messageType"], 4)
        m = p.expect(lambda m: m["requestId"] == out and m["complete"], "output completion")
        m = p.expect(lambda m: m["messageType"] == 6 and m["complete"], "resource completion")
        r = p.call(3, **job_request(job["id"]))
        self.assertEqual((r["jobs"][0]["status"], r["jobs"][0]["exitCode"]), ("Killed", 137))
        r = p.call(8, **job_request(job["id"]))
        self.assertEqual((r["messageType"], r["ipAddresses"]), (7, ["127.0.0.1"]))
        r = p.call(9, **who())
        self.assertEqual((r["messageType"], r["queues"], r["supportsContainers"]), (8, ["default"], False))

    def test_errors_for_unknown_types_and_malformed_json(self):
        p = self.start()
        r = p.call(42, **who())
        self.assertEqual((r["messageType"], r["errorCode"]), (-1, 1))
        p.send_raw(b"{not json")
        r = p.expect(lambda m: True, "an error")
        self.assertEqual((r["messageType"], r["requestId"], r["errorCode"]), (-1, 0, 2))
        self.bootstrap(p)

    def test_unknown_option_exits_1(self):
        for bad in ("--bogus=1", "--plugin-name", "-x"):
            p = self.start(bad)
            self.assertEqual(p.wait(), 1, bad)
            p.close()
            self.assertIn(bad.lstrip("-").split("=")[0], p.stderr.decode(), p.stderr)

    def test_missing_cancel_is_fatal(self):
        p = self.start()
        self.bootstrap(p)
        p.send(4, **job_request("*"))
        self.assertEqual(p.wait(), 1)
        p.close()
        self.assertIn("cancel", p.stderr.decode())

    def test_stdin_eof_and_sigterm_exit_0(self):
        p = self.start()
        self.bootstrap(p)
        p.proc.stdin.close()
        self.assertEqual(p.wait(), 0)
        q = self.start()
        self.bootstrap(q)
        q.proc.terminate()
        self.assertEqual(q.wait(), 0)

    def test_restart_keeps_jobs(self):
        p = self.start()
        self.bootstrap(p)
        done = self.submit(p, "exit 0", name="done")
        running = self.submit(p, "sleep 2", name="running", tags=["launcher-job:R"])
        time.sleep(0.5)
        p.close()
        self.assertEqual(p.proc.returncode, 0)
        q = self.start()
        self.bootstrap(q)
        r = q.call(3, **job_request("*", tags=["launcher-job:R"]))
        self.assertEqual([(j["id"], j["status"]) for j in r["jobs"]], [(running["id"], "Running")])
        r = q.call(3, **job_request(done["id"]))
        self.assertEqual((r["jobs"][0]["status"], r["jobs"][0]["exitCode"]), ("Finished", 0))
        # It goes on from where it was: it finishes 2 s after it started running, the restart
        # (0.5 s in) notwithstanding.
        r = q.call(3, **job_request(running["id"]))
        began = parse(r["jobs"][0]["lastUpdateTime"])
        q.send(4, **job_request(running["id"], cancel=False))
        m = q.expect(lambda m: m["messageType"] == 3 and m["status"] == "Finished", "the job to finish", timeout=5)
        ran = (parse(m["lastUpdateTime"]) - began).total_seconds()
        self.assertGreaterEqual(ran, 1.9)
        self.assertLess(ran, 2.4)
        fresh = self.submit(q, "exit 0")
        self.assertNotIn(fresh["id"], (done["id"], running["id"]))

    def test_only_the_latest_ended_jobs_are_kept(self):
        self.conf("keep-ended-jobs=2\n")
        p = self.start()
        self.bootstrap(p)
        ended = [self.submit(p, "exit 0", name=f"e{i}") for i in range(4)]
        running = self.submit(p, "sleep 30", name="running")
        deadline = time.time() + DEADLINE
        while time.time() < deadline:
            r = p.call(3, **job_request(ended[-1]["id"]))
            if r.get("jobs") and r["jobs"][0]["status"] == "Finished":
                break
            time.sleep(0.05)
        p.close()
        q = self.start()
        self.bootstrap(q)
        r = q.call(3, **job_request("*"))
        kept = sorted(j["name"] for j in r["jobs"])
        self.assertEqual(kept, ["e2", "e3", "running"], r)
        self.assertEqual(running["status"], "Pending")

    def test_conf_file_knobs(self):
        log_path = os.path.join(self.dir, "launches.log")
        self.conf(f"# test knobs\nnever-answer=9\nexit-after-submits=2\nlaunch-log={log_path}\n"
                  "run-seconds=0.1\nheartbeat-interval-seconds=1\n")
        p = self.start()
        self.bootstrap(p)
        hb = p.expect(lambda m: m["messageType"] == 0, "a heartbeat of the plugin's own", timeout=3)
        self.assertEqual(hb["requestId"], 0)
        rid = p.send(9, **who())
        a = self.submit(p, "true", tags=["launcher-job:A"])
        self.assertEqual(p.call(0)["messageType"], 0)
        p.send(2, requestUsername="alice", username="alice",
               job={"name": "b", "cluster": "T", "command": "true", "tags": ["launcher-job:B"]})
        b = p.expect(lambda m: m["messageType"] == 2, "the second submit's answer")["jobs"][0]
        self.assertEqual(p.wait(), 3)
        p.close()
        self.assertFalse(any(m and m.get("requestId") == rid for m in p.backlog + list(p.messages.queue)))
        with open(log_path) as f:
            self.assertEqual(f.read(), f"{a['id']} launcher-job:A\n{b['id']} launcher-job:B\n")

    def test_unknown_conf_key_exits_1(self):
        self.conf("no-such-key=1\n")
        p = self.start()
        self.assertEqual(p.wait(), 1)
        p.close()
        self.assertIn("no-such-key", p.stderr.decode())


if __name__ == "__main__":
    unittest.main(verbosity=2)
