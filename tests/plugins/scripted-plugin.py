#!/usr/bin/env python3
"""A third-party style Launcher plugin that simulates jobs (docs/plugin-protocol.md).

It speaks the Launcher Plugin API the way a plugin built on the public SDK does, and shares no
code with this repository, so tests can prove that the node drives plugins it did not write:

* options only in the ``--name=value`` form of the standard set; anything else is fatal (exit 1);
* ``$RSTUDIO_CONFIG_DIR/launcher.<plugin-name>.conf`` (default dir /etc/rstudio) wins over the
  command line and adds this plugin's test knobs: ``never-answer`` (comma list of request type
  numbers ignored silently), ``exit-after-submits`` (exit 3 right after answering the Nth
  submit), ``launch-log`` (file that gets ``<plugin job id> <launcher-job tag>`` per launch) and
  ``run-seconds`` (default running time of a job, 0.5), ``pending-seconds`` (how long a job
  stays Pending before it runs), ``submit-answer-delay`` (seconds between accepting a submit
  and answering it), ``keep-ended-jobs`` (ended jobs kept, 500: older ones are forgotten, as job
  expiry would, so that the state file, rewritten on every change, stays small in long runs);
* 4-byte big-endian length + UTF-8 JSON on stdin/stdout, logs on stderr only;
* a request missing a field it expects is a fatal protocol error (log, exit 1), as in SDK plugins.

Jobs are not run: ``exit N`` finishes with code N as soon as it runs, ``sleep S`` runs S seconds,
anything else runs ``run-seconds`` and finishes with 0. Jobs are kept in
``<scratch-path>/scripted-plugin-<plugin-name>.json`` with wall-clock deadlines, so a restarted
plugin still knows them and running jobs go on from where they were.

Standard library only; Python 3.11.
"""

import datetime
import json
import os
import pwd
import re
import signal
import socket
import struct
import sys
import threading
import time

API_VERSION = {"major": 3, "minor": 4, "patch": 0}
DEFAULT_MAX_MESSAGE = 5 * 1024 * 1024
PENDING_SECONDS = 0.2
TICK_SECONDS = 0.05
UTIL_PERIOD_SECONDS = 1.0
TERMINAL = ("Finished", "Failed", "Killed", "Canceled")

STANDARD_OPTIONS = (
    "enable-debug-logging",
    "log-level",
    "logging-dir",
    "heartbeat-interval-seconds",
    "job-expiry-hours",
    "launcher-config-file",
    "plugin-name",
    "max-message-size",
    "thread-pool-size",
    "scratch-path",
    "server-user",
    "unprivileged",
)
OWN_CONF_KEYS = (
    "never-answer",
    "exit-after-submits",
    "launch-log",
    "run-seconds",
    "pending-seconds",
    "submit-answer-delay",
    "keep-ended-jobs",
)

# Request types.
HEARTBEAT, BOOTSTRAP, SUBMIT, GET_JOB, GET_STATUS, CONTROL, GET_OUTPUT, GET_UTIL, GET_NETWORK, GET_INFO = range(10)
# Response types.
R_ERROR, R_HEARTBEAT, R_BOOTSTRAP, R_JOB_STATE, R_JOB_STATUS = -1, 0, 1, 2, 3
R_CONTROL, R_OUTPUT, R_UTIL, R_NETWORK, R_INFO = 4, 5, 6, 7, 8
# Error codes.
E_UNKNOWN, E_NOT_SUPPORTED, E_INVALID, E_JOB_NOT_FOUND = 0, 1, 2, 3
E_NOT_RUNNING, E_INVALID_STATE, E_UNSUPPORTED_VERSION = 6, 8, 10

JOB_REQUEST_FIELDS = (("requestUsername", str), ("username", str), ("jobId", str), ("encodedJobId", str))
# What each request must carry; a missing or mistyped field is fatal, as in SDK plugins.
REQUIRED_FIELDS = {
    BOOTSTRAP: (("version", dict),),
    SUBMIT: (("requestUsername", str), ("job", dict)),
    GET_JOB: JOB_REQUEST_FIELDS,
    GET_STATUS: JOB_REQUEST_FIELDS + (("cancel", bool),),
    CONTROL: JOB_REQUEST_FIELDS + (("operation", int),),
    GET_OUTPUT: JOB_REQUEST_FIELDS + (("outputType", int), ("cancel", bool)),
    GET_UTIL: JOB_REQUEST_FIELDS + (("cancel", bool),),
    GET_NETWORK: JOB_REQUEST_FIELDS,
    GET_INFO: (("requestUsername", str), ("username", str)),
}

DEBUG = False


def log(level, message):
    if level == "debug" and not DEBUG:
        return
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M:%S.%f")
    try:
        sys.stderr.write(f"{now} scripted-plugin {level}: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def die(code, message):
    log("error", message)
    os._exit(code)


def now_text(t=None):
    when = datetime.datetime.fromtimestamp(time.time() if t is None else t, datetime.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text):
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# Options.


def parse_options(argv):
    options = {}
    for arg in argv:
        m = re.fullmatch(r"--([A-Za-z0-9-]+)=(.*)", arg, re.S)
        if not m:
            die(1, f"unrecognised command-line argument '{arg}': options take the form --name=value")
        name, value = m.group(1), m.group(2)
        if name not in STANDARD_OPTIONS:
            die(1, f"unrecognised option '--{name}'")
        options[name] = value
    return options


def read_conf(path):
    values = {}
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return values
    except OSError as e:
        die(1, f"cannot read {path}: {e}")
    for no, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            die(1, f"{path}:{no}: expected key=value, got '{line}'")
        key, value = (s.strip() for s in line.split("=", 1))
        if key not in STANDARD_OPTIONS and key not in OWN_CONF_KEYS:
            die(1, f"{path}:{no}: unrecognised option '{key}'")
        values[key] = value
    return values


def as_int(options, name, default, minimum=0):
    text = options.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        die(1, f"option '{name}' must be an integer, got '{text}'")
    if value < minimum:
        die(1, f"option '{name}' must be at least {minimum}, got {value}")
    return value


def as_flag(options, name):
    text = options.get(name, "0").strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    die(1, f"option '{name}' must be 0 or 1, got '{text}'")


class Settings:
    def __init__(self, argv):
        options = parse_options(argv)
        self.plugin_name = options.get("plugin-name") or "scripted"
        conf_dir = os.environ.get("RSTUDIO_CONFIG_DIR", "").strip() or "/etc/rstudio"
        self.conf_path = os.path.join(conf_dir, f"launcher.{self.plugin_name}.conf")
        # As in SDK plugins, the plugin's own file wins over the command line.
        options.update(read_conf(self.conf_path))
        self.options = options
        self.debug = as_flag(options, "enable-debug-logging") or options.get("log-level", "").lower() == "debug"
        self.heartbeat = as_int(options, "heartbeat-interval-seconds", 5)
        self.max_message = as_int(options, "max-message-size", DEFAULT_MAX_MESSAGE, 1)
        as_int(options, "job-expiry-hours", 24)
        as_int(options, "thread-pool-size", 1, 1)
        self.unprivileged = as_flag(options, "unprivileged")
        self.scratch = options.get("scratch-path") or f"/var/lib/rstudio-launcher/{self.plugin_name}"
        server_user = options.get("server-user") or "rstudio-server"
        try:
            pwd.getpwnam(server_user)
        except KeyError:
            if not self.unprivileged:
                die(1, f"server-user '{server_user}' does not exist")
            log("warn", f"server-user '{server_user}' does not exist; running unprivileged as the current user")
        self.never_answer = set()
        for part in options.get("never-answer", "").split(","):
            if part.strip():
                try:
                    self.never_answer.add(int(part))
                except ValueError:
                    die(1, f"never-answer must list request type numbers, got '{part.strip()}'")
        self.exit_after_submits = as_int(options, "exit-after-submits", 0)
        self.keep_ended_jobs = as_int(options, "keep-ended-jobs", 500)
        self.launch_log = options.get("launch-log") or None
        try:
            self.run_seconds = float(options.get("run-seconds") or 0.5)
        except ValueError:
            die(1, f"run-seconds must be a number, got '{options.get('run-seconds')}'")
        try:
            self.submit_answer_delay = float(options.get("submit-answer-delay") or 0)
        except ValueError:
            die(1, f"submit-answer-delay must be a number, got '{options.get('submit-answer-delay')}'")
        try:
            self.pending_seconds = float(options.get("pending-seconds") or PENDING_SECONDS)
        except ValueError:
            die(1, f"pending-seconds must be a number, got '{options.get('pending-seconds')}'")


# ---------------------------------------------------------------------------------------------
# Framing and output.


class Channel:
    """Writes framed responses; responseId counts up from 1 across every response."""

    def __init__(self, out):
        self.out = out
        self.lock = threading.Lock()
        self.response_id = 0

    def send(self, message_type, request_id, payload=None):
        message = {"messageType": message_type, "requestId": request_id}
        with self.lock:
            self.response_id += 1
            message["responseId"] = self.response_id
            if payload:
                message.update(payload)
            body = json.dumps(message, separators=(",", ":")).encode("utf-8")
            try:
                self.out.write(struct.pack(">I", len(body)) + body)
                self.out.flush()
            except (BrokenPipeError, ValueError, OSError):
                # The launcher has gone: nothing left to do.
                os._exit(0)
        log("debug", f"sent {body[:300]!r}")

    def error(self, request_id, code, message):
        log("info", f"request {request_id}: error {code}: {message}")
        self.send(R_ERROR, request_id, {"errorCode": code, "errorMessage": message})


def read_exactly(stream, n):
    chunks = []
    while n > 0:
        chunk = stream.read(n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


# ---------------------------------------------------------------------------------------------
# The simulated back-end.


def job_plan(command, run_seconds):
    """(seconds running, exit code) for a command."""
    text = (command or "").strip()
    m = re.fullmatch(r"exit\s+(-?\d+)", text)
    if m:
        return 0.0, int(m.group(1))
    m = re.fullmatch(r"sleep\s+(\d+(?:\.\d*)?|\.\d+)", text)
    if m:
        return float(m.group(1)), 0
    return run_seconds, 0


class Plugin:
    def __init__(self, settings, channel):
        self.settings = settings
        self.channel = channel
        self.lock = threading.RLock()
        self.state_path = os.path.join(settings.scratch, f"scripted-plugin-{settings.plugin_name}.json")
        self.jobs = {}  # id -> record: {"job": {...}, "plan": {...}}
        self.order = []  # ids in submission order
        self.counter = 0
        self.submits = 0
        self.status_streams = {}  # requestId -> {"jobId", "username", "seq"}
        self.util_streams = {}  # requestId -> {"jobId", "seq"}
        self.output_streams = {}  # requestId -> {"jobId", "type", "sent"}
        self.util_last = {}  # job id -> time of the last figures sent
        self.hostname = socket.gethostname()
        self.load()

    # -- persistence ----------------------------------------------------------------------

    def load(self):
        try:
            os.makedirs(self.settings.scratch, exist_ok=True)
        except OSError as e:
            die(1, f"cannot create scratch path {self.settings.scratch}: {e}")
        try:
            with open(self.state_path, encoding="utf-8") as f:
                state = json.load(f)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            die(1, f"cannot read the job state {self.state_path}: {e}")
        self.counter = int(state.get("counter", 0))
        for rec in state.get("jobs", []):
            self.jobs[rec["job"]["id"]] = rec
            self.order.append(rec["job"]["id"])
        log("info", f"recovered {len(self.order)} jobs from {self.state_path}")

    def save(self):
        # Forget the oldest ended jobs beyond keep-ended-jobs: the launcher no longer asks about
        # them, and each save rewrites every job kept.
        ended = [i for i in self.order if self.jobs[i]["job"]["status"] in TERMINAL]
        if len(ended) > self.settings.keep_ended_jobs:
            gone = set(ended[: len(ended) - self.settings.keep_ended_jobs])
            for i in gone:
                del self.jobs[i]
            self.order = [i for i in self.order if i not in gone]
        state = {"counter": self.counter, "jobs": [self.jobs[i] for i in self.order]}
        tmp = self.state_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_path)

    # -- status changes and streams -------------------------------------------------------

    def set_status(self, rec, status, message, exit_code=None):
        job = rec["job"]
        job["status"] = status
        job["statusMessage"] = message
        job["lastUpdateTime"] = now_text()
        if exit_code is not None:
            job["exitCode"] = exit_code
        if status == "Running":
            rec["plan"]["ran"] = True
        self.changed(rec)

    def status_payload(self, job):
        payload = {k: job[k] for k in ("id", "name", "status", "statusMessage", "lastUpdateTime") if k in job}
        for k in ("exitCode", "pid"):
            if job.get(k) is not None:
                payload[k] = job[k]
        return payload

    def visible(self, job, username):
        return username in ("*", "") or job.get("user") in (None, username)

    def changed(self, rec):
        """Sends one status change to every open stream it concerns, and moves output/util streams on."""
        job = rec["job"]
        sequences = []
        for rid, s in sorted(self.status_streams.items()):
            if s["jobId"] in ("*", job["id"]) and self.visible(job, s["username"]):
                s["seq"] += 1
                sequences.append({"requestId": rid, "seqId": s["seq"]})
        if sequences:
            payload = self.status_payload(job)
            payload["sequences"] = sequences
            self.channel.send(R_JOB_STATUS, 0, payload)
        for rid, s in sorted(self.output_streams.items()):
            if s["jobId"] == job["id"]:
                self.push_output(rid, s, rec)
        if job["status"] in TERMINAL:
            self.push_util(job["id"], final=True)

    def output_chunks(self, rec, output_type):
        if not rec["plan"].get("ran"):
            return []
        name = rec["job"].get("name", "")
        chunks = []
        if output_type in (0, 2):
            chunks.append((f"output of {name}\n", "stdout"))
        if output_type in (1, 2):
            chunks.append((f"errors of {name}\n", "stderr"))
        return chunks

    def push_output(self, rid, stream, rec):
        """Sends what the stream has not seen yet; completes it when the job is terminal."""
        terminal = rec["job"]["status"] in TERMINAL
        chunks = [] if stream["sent"] else self.output_chunks(rec, stream["type"])
        if chunks:
            stream["sent"] = True
        for i, (text, output_type) in enumerate(chunks):
            last = i == len(chunks) - 1
            self.channel.send(R_OUTPUT, rid, {"output": text, "outputType": output_type, "complete": terminal and last})
        if terminal:
            if not chunks:
                output_type = "stderr" if stream["type"] == 1 else "stdout"
                self.channel.send(R_OUTPUT, rid, {"output": "", "outputType": output_type, "complete": True})
            self.output_streams.pop(rid, None)

    def push_util(self, job_id, final=False, only=None):
        sequences = []
        for rid, s in sorted(self.util_streams.items()):
            if s["jobId"] == job_id and (only is None or rid == only):
                s["seq"] += 1
                sequences.append({"requestId": rid, "seqId": s["seq"]})
        if not sequences:
            return
        payload = {"cpuPercent": 1.5, "cpuTime": 0.25, "virtualMemory": 10, "residentMemory": 5}
        payload["sequences"] = sequences
        payload["complete"] = final
        self.channel.send(R_UTIL, 0, payload)
        self.util_last[job_id] = time.monotonic()
        if final:
            for seq in sequences:
                self.util_streams.pop(seq["requestId"], None)

    # -- the clock ------------------------------------------------------------------------

    def tick(self):
        with self.lock:
            now = time.time()
            dirty = False
            for job_id in list(self.order):
                rec = self.jobs[job_id]
                job, plan = rec["job"], rec["plan"]
                if job["status"] == "Pending" and now >= plan["pendingUntil"]:
                    plan["runUntil"] = plan["pendingUntil"] + plan["duration"]
                    job["pid"] = 40000 + plan["number"]
                    self.set_status(rec, "Running", "Job running")
                    dirty = True
                if job["status"] == "Running" and plan.get("runUntil") is not None and now >= plan["runUntil"]:
                    self.set_status(rec, "Finished", "Job finished", plan["exitCode"])
                    dirty = True
                if job["status"] == "Running":
                    last = self.util_last.get(job_id, 0.0)
                    if time.monotonic() - last >= UTIL_PERIOD_SECONDS:
                        self.push_util(job_id)
            if dirty:
                self.save()

    def run_clock(self):
        while True:
            time.sleep(TICK_SECONDS)
            try:
                self.tick()
            except Exception as e:  # noqa: BLE001 - a plugin must not die of a simulation bug quietly
                die(1, f"simulation failed: {e!r}")

    # -- requests -------------------------------------------------------------------------

    def find(self, request_id, request):
        rec = self.jobs.get(request["jobId"])
        if rec is None or not self.visible(rec["job"], request["username"]):
            self.channel.error(request_id, E_JOB_NOT_FOUND, f"job {request['jobId']} not found")
            return None
        return rec

    def handle(self, kind, rid, request):
        if kind == HEARTBEAT:
            self.channel.send(R_HEARTBEAT, rid)
        elif kind == BOOTSTRAP:
            version = request["version"]
            if version.get("major") != API_VERSION["major"]:
                self.channel.error(
                    rid,
                    E_UNSUPPORTED_VERSION,
                    f"unsupported API version {version.get('major')}; this plugin speaks {API_VERSION['major']}",
                )
            else:
                self.channel.send(R_BOOTSTRAP, rid, {"version": API_VERSION})
        elif kind == SUBMIT:
            self.submit(rid, request)
        elif kind == GET_JOB:
            self.get_job(rid, request)
        elif kind == GET_STATUS:
            self.get_status(rid, request)
        elif kind == CONTROL:
            self.control(rid, request)
        elif kind == GET_OUTPUT:
            self.get_output(rid, request)
        elif kind == GET_UTIL:
            self.get_util(rid, request)
        elif kind == GET_NETWORK:
            if self.find(rid, request) is not None:
                self.channel.send(R_NETWORK, rid, {"host": self.hostname, "ipAddresses": ["127.0.0.1"]})
        elif kind == GET_INFO:
            self.channel.send(
                R_INFO,
                rid,
                {
                    "supportsContainers": False,
                    "queues": ["default"],
                    "resourceLimits": [],
                    "placementConstraints": [],
                    "images": [],
                    "allowUnknownImages": False,
                    "config": [],
                },
            )
        else:
            self.channel.error(rid, E_NOT_SUPPORTED, f"request type {kind} is not supported")

    def submit(self, rid, request):
        job = dict(request["job"])
        self.counter += 1
        number = self.counter
        job_id = f"sp-{number}"
        now = time.time()
        duration, exit_code = job_plan(job.get("command"), self.settings.run_seconds)
        job["id"] = job_id
        if not job.get("user"):
            job["user"] = request.get("username") or request["requestUsername"]
        job["host"] = self.hostname
        job.setdefault("submissionTime", now_text(now))
        job["lastUpdateTime"] = now_text(now)
        job["status"] = "Pending"
        job["statusMessage"] = "Job submitted"
        for k in ("exitCode", "pid"):
            job.pop(k, None)
        rec = {
            "job": job,
            "plan": {
                "number": number,
                "pendingUntil": now + self.settings.pending_seconds,
                "duration": duration,
                "exitCode": exit_code,
                "runUntil": None,
                "ran": False,
            },
        }
        self.jobs[job_id] = rec
        self.order.append(job_id)
        self.save()
        if self.settings.launch_log:
            tag = next((t for t in job.get("tags") or [] if isinstance(t, str) and t.startswith("launcher-job:")), "-")
            with open(self.settings.launch_log, "a", encoding="utf-8") as f:
                f.write(f"{job_id} {tag}\n")
                f.flush()
                os.fsync(f.fileno())
        log("info", f"submitted {job_id} ({job.get('name')!r}): runs {duration}s, exits {exit_code}")
        if self.settings.submit_answer_delay > 0:
            # The job exists (and is in the launch log) before the launcher hears of it: a
            # launcher that crashes meanwhile must find it again by its tag.
            answer = dict(job)
            delay = self.settings.submit_answer_delay
            threading.Timer(delay, lambda: self.channel.send(R_JOB_STATE, rid, {"jobs": [answer]})).start()
        else:
            self.channel.send(R_JOB_STATE, rid, {"jobs": [job]})
        self.changed(rec)
        self.submits += 1
        if self.settings.exit_after_submits and self.submits >= self.settings.exit_after_submits:
            die(3, f"exit-after-submits={self.settings.exit_after_submits} reached: exiting with 3")

    def get_job(self, rid, request):
        fields = request.get("fields")
        if request["jobId"] == "*":
            tags = request.get("tags") or []
            statuses = request.get("statuses") or []
            start = parse_time(request["startTime"]) if request.get("startTime") else None
            end = parse_time(request["endTime"]) if request.get("endTime") else None
            jobs = []
            for job_id in self.order:
                job = self.jobs[job_id]["job"]
                if not self.visible(job, request["username"]):
                    continue
                if any(t not in (job.get("tags") or []) for t in tags):
                    continue
                if statuses and job.get("status") not in statuses:
                    continue
                submitted = parse_time(job.get("submissionTime") or "")
                if start and (submitted is None or submitted < start):
                    continue
                if end and (submitted is None or submitted > end):
                    continue
                jobs.append(job)
        else:
            rec = self.find(rid, request)
            if rec is None:
                return
            jobs = [rec["job"]]
        if fields:
            keep = set(fields) | {"id"}
            jobs = [{k: v for k, v in job.items() if k in keep} for job in jobs]
        self.channel.send(R_JOB_STATE, rid, {"jobs": jobs})

    def get_status(self, rid, request):
        if request["cancel"]:
            self.status_streams.pop(rid, None)
            log("info", f"status stream {rid} closed by the launcher")
            return
        if request["jobId"] == "*":
            current = [self.jobs[i] for i in self.order if self.visible(self.jobs[i]["job"], request["username"])]
        else:
            rec = self.find(rid, request)
            if rec is None:
                return
            current = [rec]
        stream = {"jobId": request["jobId"], "username": request["username"], "seq": 0}
        self.status_streams[rid] = stream
        for rec in current:
            stream["seq"] += 1
            payload = self.status_payload(rec["job"])
            payload["sequences"] = [{"requestId": rid, "seqId": stream["seq"]}]
            self.channel.send(R_JOB_STATUS, 0, payload)

    def control(self, rid, request):
        rec = self.find(rid, request)
        if rec is None:
            return
        job, plan = rec["job"], rec["plan"]
        op, status, now = request["operation"], job["status"], time.time()
        if op not in range(5):
            self.channel.error(rid, E_INVALID, f"unknown control operation {op}")
            return
        if op == 4:
            if status != "Pending":
                self.channel.error(rid, E_INVALID_STATE, f"job {job['id']} is {status}: only Pending jobs can be canceled")
                return
            self.set_status(rec, "Canceled", "Job canceled")
            message = "Job canceled"
        elif status not in ("Running", "Suspended"):
            self.channel.error(rid, E_NOT_RUNNING, f"job {job['id']} is {status}, not running")
            return
        elif op == 0:
            if status == "Suspended":
                self.channel.error(rid, E_INVALID_STATE, f"job {job['id']} is already suspended")
                return
            plan["remaining"] = max(0.0, plan["runUntil"] - now)
            plan["runUntil"] = None
            self.set_status(rec, "Suspended", "Job suspended")
            message = "Job suspended"
        elif op == 1:
            if status != "Suspended":
                self.channel.error(rid, E_INVALID_STATE, f"job {job['id']} is not suspended")
                return
            plan["runUntil"] = now + plan.pop("remaining", 0.0)
            self.set_status(rec, "Running", "Job resumed")
            message = "Job resumed"
        else:
            code, message = (143, "Job stopped") if op == 2 else (137, "Job killed")
            plan["runUntil"] = None
            self.set_status(rec, "Killed", message, code)
        self.save()
        self.channel.send(R_CONTROL, rid, {"statusMessage": message, "operationComplete": True})

    def get_output(self, rid, request):
        if request["cancel"]:
            self.output_streams.pop(rid, None)
            log("info", f"output stream {rid} closed by the launcher")
            return
        if request["outputType"] not in (0, 1, 2):
            self.channel.error(rid, E_INVALID, f"unknown outputType {request['outputType']}")
            return
        rec = self.find(rid, request)
        if rec is None:
            return
        stream = {"jobId": rec["job"]["id"], "type": request["outputType"], "sent": False}
        self.output_streams[rid] = stream
        self.push_output(rid, stream, rec)

    def get_util(self, rid, request):
        if request["cancel"]:
            self.util_streams.pop(rid, None)
            log("info", f"resource stream {rid} closed by the launcher")
            return
        if request["jobId"] == "*":
            self.channel.error(rid, E_INVALID, "resource utilization is streamed for one job, not '*'")
            return
        rec = self.find(rid, request)
        if rec is None:
            return
        self.util_streams[rid] = {"jobId": rec["job"]["id"], "seq": 0}
        status = rec["job"]["status"]
        if status in TERMINAL:
            self.push_util(rec["job"]["id"], final=True, only=rid)
        elif status == "Running":
            self.push_util(rec["job"]["id"], only=rid)


def check_fields(kind, request):
    for name, typ in REQUIRED_FIELDS.get(kind, ()):
        value = request.get(name)
        ok = isinstance(value, typ) and not (typ is int and isinstance(value, bool))
        if not ok:
            what = "missing" if name not in request else f"of the wrong type ({type(value).__name__})"
            die(1, f"protocol error: request type {kind} (requestId {request.get('requestId')}) has field '{name}' {what}; exiting")


def heartbeats(channel, interval):
    while True:
        time.sleep(interval)
        channel.send(R_HEARTBEAT, 0)


def main():
    global DEBUG
    settings = Settings(sys.argv[1:])
    DEBUG = settings.debug
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    channel = Channel(sys.stdout.buffer)
    plugin = Plugin(settings, channel)
    log("info", f"plugin '{settings.plugin_name}' started (config {settings.conf_path}, state {plugin.state_path})")
    threading.Thread(target=plugin.run_clock, daemon=True).start()
    if settings.heartbeat > 0:
        threading.Thread(target=heartbeats, args=(channel, settings.heartbeat), daemon=True).start()

    stdin = sys.stdin.buffer
    while True:
        header = read_exactly(stdin, 4)
        if header is None:
            break
        (length,) = struct.unpack(">I", header)
        if length > settings.max_message:
            log("error", f"refusing a message of {length} bytes (limit {settings.max_message})")
            remaining = length
            while remaining > 0:
                chunk = stdin.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                remaining -= len(chunk)
            channel.error(0, E_INVALID, f"message of {length} bytes exceeds the limit of {settings.max_message}")
            continue
        body = read_exactly(stdin, length)
        if body is None:
            break
        log("debug", f"received {body[:300]!r}")
        try:
            request = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            channel.error(0, E_INVALID, f"malformed JSON: {e}")
            continue
        kind = request.get("messageType") if isinstance(request, dict) else None
        rid = request.get("requestId") if isinstance(request, dict) else None
        if not isinstance(kind, int) or isinstance(kind, bool) or not isinstance(rid, int) or isinstance(rid, bool):
            channel.error(0, E_INVALID, "a request needs an integer messageType and requestId")
            continue
        if kind in settings.never_answer:
            log("info", f"ignoring request {rid} of type {kind} (never-answer)")
            continue
        check_fields(kind, request)
        with plugin.lock:
            try:
                plugin.handle(kind, rid, request)
            except Exception as e:  # noqa: BLE001 - answer and keep serving, as SDK plugins do
                log("error", f"request {rid} of type {kind} failed: {e!r}")
                channel.error(rid, E_UNKNOWN, f"internal error: {e}")
    log("info", "stdin closed: shutting down")
    os._exit(0)


if __name__ == "__main__":
    main()
