#!/usr/bin/env python3
"""HTTP fuzzing of the five services with schemathesis (driven by scripts/fuzz.sh).

Against a running cluster (`ticketctl up`), for each service: makes a fan
with real credentials (member token, a live queue pass, a held seat and a
failed payment), writes a schemathesis configuration that authenticates
with them and the admin key, runs `st run` against the service's served
document (`/docs/openapi.json`), and reads its JSON report. Prints per
service the cases run and the failures by code; exits 1 on any failure
(a 5xx, a status or body the document does not list, or any other check).
"""

import argparse
import glob
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid

# Port offsets from --port-base, as `ticketctl up` assigns them.
SERVICES = {
    "concert": 1,
    "queue": 2,
    "reservation": 3,
    "member-balance": 4,
    "payment": 5,
}

# 5xx: a server error, or one for an undeclared content type.
SERVER_ERROR_CODES = {"ST101", "ST102"}


def call(method, url, body=None, headers=None):
    """One JSON request; returns (status, parsed body or None)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("content-type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


class Cluster:
    def __init__(self, ticketctl, data_dir, port_base):
        self.ticketctl = ticketctl
        self.data_dir = data_dir
        self.port_base = port_base
        with open(os.path.join(data_dir, "admin-key"), encoding="utf-8") as f:
            self.admin_key = f.read().strip()

    def url(self, service):
        return f"http://127.0.0.1:{self.port_base + SERVICES[service]}"

    def login(self, user):
        return subprocess.run(
            [self.ticketctl, "login", user, "--data-dir", self.data_dir],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()


def expect(what, status, body, wanted):
    if status not in wanted:
        sys.exit(f"fuzz: cannot make the credentials: {what} answered {status}: {body}")
    return body


def free_seats(cluster):
    """A schedule with two free seats (earlier runs may hold some), its
    concert, and the two seats."""
    concerts = expect("GET /v1/concerts", *call("GET", cluster.url("concert") + "/v1/concerts"), {200})
    for concert in concerts:
        schedules = expect(
            "GET schedules",
            *call("GET", cluster.url("concert") + f"/v1/concerts/{concert['id']}/schedules"),
            {200},
        )
        for schedule in schedules:
            seats = expect(
                "GET seats",
                *call("GET", cluster.url("concert") + f"/v1/schedules/{schedule['id']}/seats"),
                {200},
            )
            free = [s["seat_no"] for s in seats if s["status"] == "AVAILABLE"]
            if len(free) >= 2:
                return concert["id"], schedule["id"], free[:2]
    sys.exit("fuzz: no schedule has two free seats (start the cluster with its demo catalog)")


def make_fan(cluster):
    """A fresh fan in the line with a live pass, one HELD reservation and
    one FAILED payment: the identifiers schemathesis draws from so that its
    requests reach the handlers (an own wallet, reservation, payment) and
    not only the 401/404 paths. The wallet stays empty, so that no payment
    the fuzzing makes can complete: a completed payment ends the pass, and
    every later request with it would stop at 401 `pass_ended`. A fresh fan
    per service, as passes and holds expire."""
    user = str(uuid.uuid4())
    token = cluster.login(user)
    auth = {"authorization": f"Bearer {token}"}
    concert, schedule, seats = free_seats(cluster)
    joined = expect(
        "POST /v1/queue/tokens",
        *call("POST", cluster.url("queue") + "/v1/queue/tokens", {"concert_id": concert}, auth),
        {200, 201},
    )
    if not joined.get("pass"):
        sys.exit(f"fuzz: the fan was not admitted at once: {joined}")
    passed = dict(auth, **{"queue-pass": joined["pass"]})

    def hold(seat):
        held = expect(
            "POST /v1/reservations",
            *call(
                "POST",
                cluster.url("reservation") + "/v1/reservations",
                {"schedule_id": schedule, "seat_no": seat},
                passed,
            ),
            {201, 202},
        )
        return held["id"]

    unpaid = hold(seats[0])
    paid = expect(
        "POST /v1/payments",
        *call(
            "POST",
            cluster.url("payment") + "/v1/payments",
            {"reservation_id": unpaid},
            dict(passed, **{"idempotency-key": "fuzz-pay"}),
        ),
        {201, 202},
    )
    return {
        "user": user,
        "token": token,
        "concert": concert,
        "schedule": schedule,
        "queue_token": joined["token"],
        "pass": joined["pass"],
        "reservations": [hold(seats[1]), unpaid],
        "payments": [paid["id"]],
    }


def toml_string(value):
    return json.dumps(value)


HOOKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz_hooks.py")


def configuration(cluster, fan, service):
    """schemathesis.toml: the hooks (fuzz_hooks.py: the narrow exceptions
    and why), the three security schemes of the documents, and dictionaries
    that put the fan's own identifiers in path and body fields half of the
    time (the other half stays generated: unknown and malformed ids,
    another fan's wallet). A hold or payment naming an unknown schedule or
    reservation waits `decision_wait_ms` (2-3 s) before its 404, as the
    service may not have heard of a new one yet, so those bodies carry the
    fan's own ids four times in five, else such cases would take most of
    the run."""
    lines = [
        f"hooks = {toml_string(HOOKS)}",
        "",
        "[auth.openapi.admin_key]",
        f"api_key = {toml_string(cluster.admin_key)}",
        "[auth.openapi.member_token]",
        f"bearer = {toml_string(fan['token'])}",
        "[auth.openapi.queue_pass]",
        f"api_key = {toml_string(fan['pass'])}",
        "",
        "[dictionaries]",
        f"user = {{ values = {toml_string([fan['user']])} }}",
        f"concert = {{ values = {toml_string([fan['concert']])} }}",
        f"schedule = {{ values = {toml_string([fan['schedule']])} }}",
        f"queue_token = {{ values = {toml_string([fan['queue_token']])} }}",
        f"ids = {{ values = {toml_string(fan['payments'] if service == 'payment' else fan['reservations'])} }}",
        f"reservation = {{ values = {toml_string(fan['reservations'])} }}",
        "",
        "[parameters]",
        '"path.user_id" = { dictionary = "user", probability = 0.5 }',
        '"path.concert_id" = { dictionary = "concert", probability = 0.5 }',
        '"path.schedule_id" = { dictionary = "schedule", probability = 0.5 }',
        '"path.token" = { dictionary = "queue_token", probability = 0.5 }',
        '"path.id" = { dictionary = "ids", probability = 0.5 }',
        '"body.concert_id" = { dictionary = "concert", probability = 0.5 }',
        '"body.schedule_id" = { dictionary = "schedule", probability = 0.8 }',
        '"body.reservation_id" = { dictionary = "reservation", probability = 0.8 }',
    ]
    return "\n".join(lines) + "\n"


def run_service(cluster, service, args, work):
    fan = make_fan(cluster)
    directory = os.path.join(work, service)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "schemathesis.toml"), "w", encoding="utf-8") as f:
        f.write(configuration(cluster, fan, service))
    command = shlex.split(args.st) + [
        "run",
        cluster.url(service) + "/docs/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(args.examples),
        "--report",
        "json,ndjson",
        "--report-dir",
        "report",
        "--no-color",
        "--continue-on-failure",
        "--generation-database",
        "none",
    ]
    if args.seed is not None:
        command += ["--seed", str(args.seed)]
    started = time.monotonic()
    with open(os.path.join(directory, "output.txt"), "w", encoding="utf-8") as output:
        code = subprocess.run(command, cwd=directory, stdout=output, stderr=subprocess.STDOUT).returncode
    elapsed = time.monotonic() - started
    reports = sorted(glob.glob(os.path.join(directory, "report", "json-*.json")))
    if not reports:
        return {"service": service, "error": f"no report (exit {code})", "dir": directory}
    with open(reports[-1], encoding="utf-8") as f:
        report = json.load(f)
    failures = {}
    for failure in report.get("failures", []):
        failures[failure["code"]] = failures.get(failure["code"], 0) + failure["count"]
    return {
        "service": service,
        "cases": report["test_cases"]["generated"],
        "failures": failures,
        "errors": len(report.get("errors", [])),
        "dropped": report.get("filtered", 0),
        "exit": code,
        "secs": elapsed,
        "dir": directory,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", required=True, help="the cluster's data folder (admin key, identity provider)")
    parser.add_argument("--port-base", type=int, required=True)
    parser.add_argument("--ticketctl", required=True)
    parser.add_argument("--st", default="st", help="the schemathesis command (split like a shell)")
    parser.add_argument("--examples", type=int, required=True, help="maximum cases per operation and phase")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--services", default=",".join(SERVICES))
    parser.add_argument("--work-dir", help="where the configurations, outputs and reports go")
    args = parser.parse_args()

    cluster = Cluster(args.ticketctl, args.data_dir, args.port_base)
    work = args.work_dir or tempfile.mkdtemp(prefix="fuzz-reports-")
    results = []
    for service in args.services.split(","):
        print(f"fuzz: {service} ...", flush=True)
        result = run_service(cluster, service, args, work)
        results.append(result)

    print()
    print(f"{'service':<16}{'cases':>7}{'5xx':>6}{'failures':>10}{'excused':>9}{'seconds':>9}")
    failed = False
    for r in results:
        if "error" in r:
            failed = True
            print(f"{r['service']:<16}{'-':>7}{'-':>6}{'-':>10}{'-':>9}{'-':>9}   {r['error']} (see {r['dir']})")
            continue
        server_errors = sum(n for c, n in r["failures"].items() if c in SERVER_ERROR_CODES)
        others = sum(n for c, n in r["failures"].items() if c not in SERVER_ERROR_CODES)
        # Any failure, an engine error, or a non-zero exit for another reason fails the run.
        bad = bool(server_errors or others or r["errors"] or r["exit"] != 0)
        failed = failed or bad
        detail = ", ".join(f"{c}: {n}" for c, n in sorted(r["failures"].items()))
        if r["errors"]:
            detail = ", ".join(filter(None, [detail, f"{r['errors']} errors"]))
        print(
            f"{r['service']:<16}{r['cases']:>7}{server_errors:>6}{others:>10}{r['dropped']:>9}{r['secs']:>9.0f}"
            + (f"   {detail or 'exit ' + str(r['exit'])} (see {r['dir']}/output.txt)" if bad else "")
        )
    print("(failures: unique failures by check; excused: failures scripts/fuzz_hooks.py dropped)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
