#!/usr/bin/env python3
"""The chaos run of issue 7: `trailbook serve` against `trailbook partner-sim --chaos`, N scripted bookings
and N scripted visits, then proof that nothing was duplicated or lost.

    cargo build --release && python3 scripts/chaos.py [--bookings 1000] [--visits 1000]

What it does:
  1. creates a fresh database (DATABASE_URL names the server; default postgres://postgres@127.0.0.1:5432/postgres),
  2. starts `trailbook partner-sim --chaos` (latency, timeout after success, 429 with Retry-After, 5xx,
     duplicate and late callbacks) and `trailbook serve` pointed at it, with report e-mails that time out
     after success 20% of the time,
  3. drives the script over REST with 16 client threads: bookings are created (10% sent twice with the same
     Idempotency-Key, as a client retry), paid with a good card (70%), a declined card (15%, which starts
     compensation under the partner's rate limits) or cancelled (15%); visits are scheduled and completed
     (80%, which generates a PDF report and e-mails it), cancelled (10%) or marked no-show (10%),
  4. waits until every job is finished or dead and the projections have caught up, then checks:
     - no duplicates: one partner reservation per booking, at most one confirmation, capture, compensation
       and cancellation per booking, one report and at most one e-mail per visit (the mail transport's own
       counter and the .eml files agree with the ReportSent events);
     - nothing lost: every event that calls for a job has its job, no job is queued, running or waiting for
       a retry, every dead job has a reason;
     - every booking and visit is in a final state (side effects done) or visibly dead-lettered with a reason;
     - every compensated booking's reservation is cancelled at the partner;
     - the read model's status board agrees with the event store.
It prints each check and exits 0 only if all pass. Python 3.8+, standard library only; needs `psql`.
"""

import argparse
import concurrent.futures as futures
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

GOOD_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000002"
BOOKING_FINAL = {"paid", "rejected", "failed", "cancelled", "compensation_failed"}
VISIT_FINAL = {"completed", "cancelled", "no_show"}


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Http:
    def __init__(self, base, token):
        self.base = base
        self.token = token

    def call(self, method, path, body=None, headers=None, retries=5):
        """(status, json body) of a request; connection errors are retried a few times."""
        data = json.dumps(body).encode() if body is not None else None
        h = {"authorization": f"Bearer {self.token}", "content-type": "application/json"}
        h.update(headers or {})
        for attempt in range(retries):
            request = urllib.request.Request(self.base + path, data=data, method=method, headers=h)
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    raw = response.read()
                    return response.status, (json.loads(raw) if raw else None)
            except urllib.error.HTTPError as e:
                raw = e.read()
                try:
                    return e.code, json.loads(raw) if raw else None
                except ValueError:
                    return e.code, {"raw": raw.decode(errors="replace")}
            except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
                if attempt + 1 == retries:
                    raise
                time.sleep(0.2 * (attempt + 1))
        raise RuntimeError("unreachable")

    def text(self, path):
        request = urllib.request.Request(self.base + path, headers={"authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read().decode()


class Psql:
    def __init__(self, url):
        self.url = url

    def rows(self, sql):
        done = subprocess.run(
            ["psql", self.url, "-X", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", sql],
            capture_output=True, text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr.strip()}\n{sql}")
        out = done.stdout
        return [line.split("\t") for line in out.splitlines() if line != ""]

    def value(self, sql):
        rows = self.rows(sql)
        return rows[0][0] if rows else None


def database_url(server_url, name):
    parts = urllib.parse.urlsplit(server_url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def wait_healthy(url, process, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"process exited with {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.3)
    raise SystemExit(f"{url} did not answer in {seconds} s")


def booking_body(i):
    return {
        "partner": "acme-hotels",
        "resource": f"room-{i}",
        "starts_at": "2026-12-01T15:00:00Z",
        "ends_at": "2026-12-03T11:00:00Z",
        "guests": 1 + i % 4,
        "amount": {"minor": 10_000 + i, "currency": "EUR"},
        "customer": {"name": f"Guest {i}", "email": f"guest{i}@example.com"},
    }


def visit_body(i):
    return {
        "patient": {"id": f"p-{i}", "name": f"Patient {i}", "email": f"patient{i}@example.com"},
        "clinician": f"dr-{i % 7}",
        "scheduled_at": "2026-12-01T09:30:00Z",
    }


class Run:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.failures = []
        self.lock = threading.Lock()

    def fail(self, message):
        with self.lock:
            self.failures.append(message)
        log(f"FAIL {message}")

    # -- the script ------------------------------------------------------------------------------------

    def create_booking(self, i, plan):
        key = f"chaos-booking-{i}"
        status, body = self.api.call("POST", "/v1/bookings", booking_body(i), {"idempotency-key": key})
        if status != 202:
            self.fail(f"booking {i}: create answered {status} {body}")
            return None
        if plan["retry_create"]:
            again, body2 = self.api.call("POST", "/v1/bookings", booking_body(i), {"idempotency-key": key})
            if again != 202 or body2.get("booking_id") != body["booking_id"]:
                self.fail(f"booking {i}: a retried create answered {again} {body2}, not the same booking")
        return body["booking_id"]

    def drive_booking(self, booking_id, plan, deadline):
        """Waits for the partner's answer, then pays or cancels as planned."""
        while time.time() < deadline:
            status, body = self.api.call("GET", f"/v1/bookings/{booking_id}")
            if status != 200:
                self.fail(f"booking {booking_id}: GET answered {status} {body}")
                return
            state = body["status"]
            if state in ("requested", "partner_pending"):
                time.sleep(0.5)
                continue
            if state != "confirmed":
                return  # rejected or failed: final without us
            if plan["action"] == "cancel":
                status, body = self.api.call(
                    "POST", f"/v1/bookings/{booking_id}/cancel", {"reason": "chaos: guest changed plans"})
            else:
                card = DECLINED_CARD if plan["action"] == "decline" else GOOD_CARD
                status, body = self.api.call("POST", f"/v1/bookings/{booking_id}/payment", {"card": card})
            if status != 200:
                self.fail(f"booking {booking_id}: {plan['action']} answered {status} {body}")
            return
        self.fail(f"booking {booking_id}: no partner answer before the deadline")

    def drive_visit(self, i, plan):
        status, body = self.api.call("POST", "/v1/visits", visit_body(i), {"idempotency-key": f"chaos-visit-{i}"})
        if status != 202:
            self.fail(f"visit {i}: create answered {status} {body}")
            return None
        visit_id = body["visit_id"]
        steps = {
            "complete": [("check-in", None), ("start", None),
                         ("complete", {"summary": f"Visit {i}: mild cold. Rest and fluids.",
                                       "diagnosis_codes": ["J06.9"]})],
            "cancel": [("cancel", {"reason": "chaos: patient called"})],
            "no_show": [("no-show", None)],
        }[plan]
        for step, step_body in steps:
            status, body = self.api.call("POST", f"/v1/visits/{visit_id}/{step}", step_body or {})
            if status != 200:
                self.fail(f"visit {visit_id}: {step} answered {status} {body}")
                return visit_id
        return visit_id

    # -- waiting ---------------------------------------------------------------------------------------

    def wait_quiet(self, seconds):
        """Until no job is queued, running or waiting for a retry and the reactor has read the whole log."""
        deadline = time.time() + seconds
        last = None
        while time.time() < deadline:
            open_jobs = int(self.db.value("select count(*) from jobs where state in ('queued','running','failed')"))
            behind = self.db.value(
                "select count(*) from events e, reactor_checkpoints c where c.name = 'jobs'"
                " and (e.tx_id::text::bigint, e.global_position) > (c.tx_id, c.position)")
            summary = (open_jobs, int(behind))
            if summary != last:
                log(f"  open jobs {open_jobs}, events the reactor has not read {behind}")
                last = summary
            if open_jobs == 0 and int(behind) == 0:
                return True
            time.sleep(2)
        return False

    # -- checks ----------------------------------------------------------------------------------------

    def check(self, name, ok, detail=""):
        line = f"{'ok  ' if ok else 'FAIL'} {name}" + (f": {detail}" if detail else "")
        print(line, flush=True)
        if not ok:
            with self.lock:
                self.failures.append(line)

    def checks(self, bookings, visits, plans):
        db = self.db
        print("\n== checks", flush=True)
        # duplicates, from the event store
        per_booking = db.rows("""
            select aggregate_id,
                   count(*) filter (where event_type = 'PartnerConfirmed'),
                   count(*) filter (where event_type = 'PaymentCaptured'),
                   count(*) filter (where event_type = 'CompensationCompleted'),
                   count(*) filter (where event_type = 'BookingCancelled'),
                   count(distinct payload #>> '{PartnerConfirmed,reservation_id}')
            from events where aggregate_type = 'booking' group by aggregate_id""")
        twice = [r for r in per_booking if any(int(c) > 1 for c in r[1:])]
        self.check("no booking confirmed, paid, compensated or cancelled twice, none with two reservations",
                   not twice, f"{len(twice)} bookings, e.g. {twice[:3]}")
        stats = json.loads(urllib.request.urlopen(self.partner + "/control/stats", timeout=10).read())
        reserved = int(db.value("select count(distinct aggregate_id) from events where event_type = 'PartnerReservationRequested'"))
        self.check("the partner created at most one reservation per booking",
                   stats["reservations_created"] <= reserved,
                   f"{stats['reservations_created']} reservations for {reserved} bookings asked")
        duplicates_at_partner = 0
        for booking_id in bookings:
            status, found = self.partner_api.call("GET", "/v1/reservations?client_reference=" + urllib.parse.quote(booking_id))
            if status == 200 and len(found) > 1:
                duplicates_at_partner += 1
        self.check("the partner holds no booking twice", duplicates_at_partner == 0, f"{duplicates_at_partner}")

        per_visit = db.rows("""
            select aggregate_id,
                   count(*) filter (where event_type = 'ReportGenerated'),
                   count(*) filter (where event_type = 'ReportSent')
            from events where aggregate_type = 'visit' group by aggregate_id""")
        twice = [r for r in per_visit if int(r[1]) > 1 or int(r[2]) > 1]
        self.check("no visit has two reports or two e-mails recorded", not twice, f"{twice[:3]}")
        sent_events = sum(int(r[2]) for r in per_visit)
        metrics = self.api.text("/metrics")
        delivered = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                        if line.startswith("trailbook_mail_delivered_total"))
        eml = len([f for f in os.listdir(os.path.join(self.data_dir, "mail")) if f.endswith(".eml")]) \
            if os.path.isdir(os.path.join(self.data_dir, "mail")) else 0
        timeouts = int(db.value("select count(*) from notifications where attempts > 1"))
        self.check("the mail provider received exactly one e-mail per ReportSent",
                   int(delivered) == sent_events == eml,
                   f"provider {int(delivered)}, events {sent_events}, .eml files {eml}; "
                   f"{timeouts} e-mails needed more than one attempt")

        # nothing lost
        missing = db.rows("""
            select e.event_type, count(*) from events e
            left join jobs j on j.dedupe_key = case e.event_type
                when 'BookingRequested' then 'partner.reserve:' || e.aggregate_id
                when 'PartnerReservationOutcomeUnknown' then 'partner.reconcile:' || e.aggregate_id || ':' || e.sequence
                when 'CompensationStarted' then 'partner.compensate:' || e.aggregate_id
                when 'BookingCancelled' then 'partner.release:' || e.aggregate_id
                when 'VisitCompleted' then 'report.generate:' || e.aggregate_id
                when 'ReportGenerated' then 'report.send:' || e.aggregate_id || ':' || e.sequence end
            where e.event_type in ('BookingRequested','PartnerReservationOutcomeUnknown','CompensationStarted',
                                   'BookingCancelled','VisitCompleted','ReportGenerated')
              and j.id is null
            group by 1""")
        self.check("every event that calls for a job has its job", not missing, f"{missing}")
        states = db.rows("select kind, state, count(*) from jobs group by 1, 2 order by 1, 2")
        print("   jobs: " + ", ".join(f"{k} {s} {c}" for k, s, c in states), flush=True)
        unfinished = [r for r in states if r[1] not in ("succeeded", "dead")]
        self.check("no job is left queued, running or waiting for a retry", not unfinished, f"{unfinished}")
        no_reason = db.value("select count(*) from jobs where state = 'dead' and coalesce(last_error, '') = ''")
        self.check("every dead job says why", int(no_reason) == 0, f"{no_reason} without a reason")
        attempts = db.value("select count(*) from job_attempts")
        print(f"   {attempts} job attempts in the execution log", flush=True)

        # final states
        dead_for = {r[0] for r in db.rows(
            "select coalesce(payload->>'booking_id', payload->>'visit_id') from jobs where state = 'dead'")}
        final_counts, stuck = {}, []
        for booking_id in bookings:
            status, body = self.api.call("GET", f"/v1/bookings/{booking_id}")
            state = body.get("status") if status == 200 else f"http {status}"
            final_counts[state] = final_counts.get(state, 0) + 1
            if state not in BOOKING_FINAL and booking_id not in dead_for:
                stuck.append((booking_id, state))
        print("   bookings: " + ", ".join(f"{k} {v}" for k, v in sorted(final_counts.items())), flush=True)
        self.check("every booking is final or visibly dead-lettered", not stuck, f"{len(stuck)}, e.g. {stuck[:5]}")

        visit_counts, stuck = {}, []
        for visit_id in visits:
            status, body = self.api.call("GET", f"/v1/visits/{visit_id}")
            if status != 200:
                stuck.append((visit_id, f"http {status}"))
                continue
            state = body["status"]
            report, email = body.get("report_status"), body.get("email_status")
            key = state if state != "completed" else f"completed (report {report}, e-mail {email})"
            visit_counts[key] = visit_counts.get(key, 0) + 1
            settled = state in VISIT_FINAL and (state != "completed" or (
                report in ("done", "failed") and email in ("done", "failed")))
            if not settled and visit_id not in dead_for:
                stuck.append((visit_id, key))
        print("   visits: " + ", ".join(f"{k} {v}" for k, v in sorted(visit_counts.items())), flush=True)
        self.check("every visit is final with its side effects settled, or visibly dead-lettered",
                   not stuck, f"{len(stuck)}, e.g. {stuck[:5]}")

        # compensation and cancellation gave the partner reservation back
        given_back = db.rows(
            "select aggregate_id, event_type from events"
            " where event_type in ('CompensationCompleted', 'PartnerReservationReleased')")
        compensated = [b for b, kind in given_back if kind == "CompensationCompleted"]
        cancelled = {r[0] for r in db.rows("select aggregate_id from events where event_type = 'BookingCancelled'")}
        released = {b for b, kind in given_back if kind == "PartnerReservationReleased"}
        self.check("every booking cancelled on our side recorded its reservation released",
                   cancelled == released, f"{len(cancelled - released)} of {len(cancelled)} not released")
        not_released = 0
        for booking_id in set(compensated) | cancelled:
            status, found = self.partner_api.call("GET", "/v1/reservations?client_reference=" + urllib.parse.quote(booking_id))
            if status != 200 or any(r.get("status") != "cancelled" for r in found):
                not_released += 1
        self.check("no compensated or cancelled booking's reservation is still held at the partner",
                   not_released == 0, f"{not_released} of {len(set(compensated) | cancelled)} still held")
        declined = sum(1 for p in plans.values() if p["action"] == "decline")
        print(f"   {len(compensated)} compensations completed ({declined} bookings planned a declined card); "
              f"partner stats {stats}", flush=True)

        # the read model agrees with the event store
        deadline = time.time() + 60
        while time.time() < deadline:
            lag = self.graphql("{ projections { name lagEvents } }")["projections"]
            if all(p["lagEvents"] == 0 for p in lag):
                break
            time.sleep(1)
        board = self.graphql("{ statusBoard { counts { aggregateType status count } } }")["statusBoard"]["counts"]
        read_model = {(c["aggregateType"], c["status"].lower()): c["count"] for c in board if c["count"]}
        truth = {}
        for booking_id in bookings:
            status, body = self.api.call("GET", f"/v1/bookings/{booking_id}")
            truth[("BOOKING", body["status"])] = truth.get(("BOOKING", body["status"]), 0) + 1
        for visit_id in visits:
            status, body = self.api.call("GET", f"/v1/visits/{visit_id}")
            truth[("VISIT", body["status"])] = truth.get(("VISIT", body["status"]), 0) + 1
        self.check("the status board (read model) agrees with the event store", read_model == truth,
                   "" if read_model == truth else f"read model {read_model} vs {truth}")

    def graphql(self, query):
        request = urllib.request.Request(
            self.query_url + "/graphql", data=json.dumps({"query": query}).encode(),
            headers={"authorization": f"Bearer {self.operator_token}", "content-type": "application/json"})
        body = json.loads(urllib.request.urlopen(request, timeout=30).read())
        if body.get("errors"):
            raise RuntimeError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    # -- main ------------------------------------------------------------------------------------------

    def main(self):
        args = self.args
        binary = os.path.abspath(args.bin)
        if not os.path.exists(binary):
            raise SystemExit(f"{binary} not found: run `cargo build --release` first")
        if shutil.which("psql") is None:
            raise SystemExit("psql not found: install the PostgreSQL client")
        name = f"trailbook_chaos_{int(time.time())}_{os.getpid()}"
        Psql(args.database_url).rows(f"create database {name}")
        self.db = Psql(database_url(args.database_url, name))
        work = tempfile.mkdtemp(prefix="trailbook-chaos-")
        self.data_dir = os.path.join(work, "data")
        cp, qp, pp = free_port(), free_port(), free_port()
        env = dict(os.environ,
                   DATABASE_URL=self.db.url,
                   TRAILBOOK_DATA_DIR=self.data_dir,
                   TRAILBOOK_JWT_SECRET=secrets.token_hex(32),
                   TRAILBOOK_PARTNER_SECRET=secrets.token_hex(32),
                   TRAILBOOK_RATE_LIMIT="0",
                   RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        log(f"database {name}, data dir {self.data_dir}, logs in {work}")
        processes = []
        try:
            sim_log = open(os.path.join(work, "partner-sim.log"), "w")
            sim = subprocess.Popen(
                [binary, "partner-sim", "--chaos", "--addr", f"127.0.0.1:{pp}",
                 "--callback-url", f"http://127.0.0.1:{cp}/v1/partner/callbacks"],
                env=env, stdout=sim_log, stderr=subprocess.STDOUT)
            processes.append(sim)
            serve_log = open(os.path.join(work, "serve.log"), "w")
            serve = subprocess.Popen(
                [binary, "serve"],
                env=dict(env,
                         TRAILBOOK_COMMAND_ADDR=f"127.0.0.1:{cp}",
                         TRAILBOOK_QUERY_ADDR=f"127.0.0.1:{qp}",
                         TRAILBOOK_PARTNER_URL=f"http://127.0.0.1:{pp}",
                         TRAILBOOK_MAIL_TIMEOUT_AFTER_SUCCESS=str(args.mail_timeouts)),
                stdout=serve_log, stderr=subprocess.STDOUT)
            processes.append(serve)
            wait_healthy(f"http://127.0.0.1:{pp}/control/stats", sim)
            wait_healthy(f"http://127.0.0.1:{cp}/healthz", serve)
            faults = urllib.request.urlopen(f"http://127.0.0.1:{pp}/control/faults", timeout=5).read().decode()
            log(f"partner simulator faults: {faults}")

            def token(role):
                out = subprocess.run([binary, "token", "--role", role, "--subject", f"chaos-{role}"],
                                     env=env, check=True, capture_output=True, text=True).stdout
                return out.strip().splitlines()[-1]
            self.api = Http(f"http://127.0.0.1:{cp}", token("operator"))
            self.operator_token = self.api.token
            self.partner = f"http://127.0.0.1:{pp}"
            self.partner_api = Http(self.partner, "")
            self.query_url = f"http://127.0.0.1:{qp}"

            plans = {}
            for i in range(args.bookings):
                roll = self.rng.random()
                action = "pay" if roll < 0.70 else "decline" if roll < 0.85 else "cancel"
                plans[i] = {"action": action, "retry_create": self.rng.random() < 0.10}
            visit_plans = {}
            for i in range(args.visits):
                roll = self.rng.random()
                visit_plans[i] = "complete" if roll < 0.80 else "cancel" if roll < 0.90 else "no_show"

            started = time.time()
            log(f"creating {args.bookings} bookings and {args.visits} visits with {args.clients} clients")
            bookings, visits = {}, []
            with futures.ThreadPoolExecutor(args.clients) as pool:
                booking_jobs = {pool.submit(self.create_booking, i, plans[i]): i for i in range(args.bookings)}
                visit_jobs = [pool.submit(self.drive_visit, i, visit_plans[i]) for i in range(args.visits)]
                for job in futures.as_completed(booking_jobs):
                    booking_id = job.result()
                    if booking_id:
                        bookings[booking_id] = plans[booking_jobs[job]]
                visits = [v for v in (j.result() for j in visit_jobs) if v]
                log(f"created {len(bookings)} bookings and {len(visits)} visits in {time.time() - started:.0f} s; "
                    "paying and cancelling as the partner answers")
                deadline = time.time() + args.timeout
                list(pool.map(lambda item: self.drive_booking(item[0], item[1], deadline), bookings.items()))
            log(f"script done in {time.time() - started:.0f} s; waiting for every job to finish")
            if not self.wait_quiet(args.timeout):
                self.fail("jobs still open at the deadline")
            log(f"quiet after {time.time() - started:.0f} s; the partner recovers (faults off) for the checks")
            request = urllib.request.Request(self.partner + "/control/faults", data=b"{}", method="PUT",
                                             headers={"content-type": "application/json"})
            urllib.request.urlopen(request, timeout=10).read()
            self.checks(list(bookings), visits, {b: p for b, p in bookings.items()})
        finally:
            for p in reversed(processes):
                p.terminate()
            for p in processes:
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
            if not args.keep:
                try:
                    Psql(args.database_url).rows(f"drop database if exists {name} with (force)")
                except subprocess.CalledProcessError:
                    pass
        print()
        if self.failures:
            print(f"CHAOS RUN FAILED: {len(self.failures)} problems (logs and data in {work})")
            return 1
        print(f"CHAOS RUN PASSED: {len(bookings)} bookings and {len(visits)} visits, no duplicates, nothing lost "
              f"(logs in {work})")
        return 0


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bookings", type=int, default=1000)
    parser.add_argument("--visits", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=int, default=900, help="seconds to wait for each phase")
    parser.add_argument("--mail-timeouts", type=float, default=0.2,
                        help="probability that a delivered e-mail reports a timeout")
    parser.add_argument("--bin", default="target/release/trailbook")
    parser.add_argument("--database-url",
                        default=os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
                        help="the PostgreSQL server to create the run's database on")
    parser.add_argument("--keep", action="store_true", help="keep the run's database")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(Run(parse_args()).main())
