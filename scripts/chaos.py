#!/usr/bin/env python3
"""The chaos run of issues 7 and 15: `trailbook serve` against `trailbook partner-sim --chaos`, bookings that
fight over a few rooms, payments and refunds through the simulated provider, visits, and `serve` killed with
SIGKILL twice mid-run; then proof that no room was sold twice or lost, nobody was charged twice, and nothing
was duplicated or lost.

    cargo build --release && python3 scripts/chaos.py [--bookings 1000] [--rooms 50] [--visits 200] [--kills 2]

What it does:
  1. creates a fresh database (DATABASE_URL names the server; default postgres://postgres@127.0.0.1:5432/postgres),
  2. starts `trailbook partner-sim --chaos` (latency, timeout after success, 429 with Retry-After, 5xx,
     duplicate and late callbacks and payment webhooks, for reservations and payments alike) and
     `trailbook serve` pointed at it, with report e-mails that time out after success 20% of the time,
  3. drives the script over REST with 16 client threads, each booking with its own X-Correlation-Id:
     bookings on `--rooms` rooms with overlapping stays (two of the rooms belong to a partner that rejects
     every reservation); a refused create, 409 slot_taken, is part of the script: the guest tries other
     dates of the room; 10% of creates are sent twice with one Idempotency-Key; then as planned: paid with
     a good card (55%),
     a declined card (15%: compensation under the partner's rate limits), cancelled while the partner is
     still answering (10%), or paid and then cancelled (20%: a refund); visits are scheduled and completed,
     cancelled or marked no-show,
  4. kills `serve` with SIGKILL `--kills` times while the script runs (at 30% and 65% of the bookings'
     scripts) and starts it again on the same database and ports (clients retry through the gap with
     their idempotency keys),
  5. waits until every job is finished or dead and the projections have caught up, then checks, from the
     database and the simulator's ledgers:
     - no slot is held by a booking whose status does not hold the room, and every live booking holds one;
     - no two live bookings overlap on one room;
     - every reservation the partner holds belongs to a live booking (none orphaned), no booking twice;
     - charges minus refunds equal what the paid bookings cost; no booking was charged twice;
     - every booking is final, or visibly stuck with a reason (a dead job, a failure reason);
     - one correlation id per booking, from the request to the final state;
     - no duplicates (confirmation, capture, compensation, cancellation, report, e-mail), every event that
       calls for a job has its job, no job left open, every dead job says why;
     - the read model's status board agrees with the event store.
It prints each check and its figures and exits 0 only if all pass. Python 3.8+, standard library only;
needs `psql`.
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
BOOKING_FINAL = {"paid", "rejected", "failed", "cancelled", "compensation_failed", "refunded", "refund_failed"}
HOLDS_SLOT = {"requested", "partner_pending", "confirmed", "payment_pending", "paid", "compensating"}
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

    def call(self, method, path, body=None, headers=None, retries=120):
        """(status, json body) of a request; connection errors (a killed server restarting) and 503s are
        retried for up to a minute: every command is safe to repeat (idempotency key, or a no-op)."""
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
                if e.code == 503 and attempt + 1 < retries:
                    time.sleep(0.5)
                    continue
                try:
                    return e.code, json.loads(raw) if raw else None
                except ValueError:
                    return e.code, {"raw": raw.decode(errors="replace")}
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
                if attempt + 1 == retries:
                    raise
                time.sleep(0.5)
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


def stay(room, rng, days=60):
    """A stay of 1 to 4 nights in `room`, starting within `days` days (20 bookings a room over 60 days
    overlap often)."""
    start = rng.randrange(days)
    nights = 1 + rng.randrange(4)
    day = lambda n: time.strftime("%Y-%m-%dT15:00:00Z", time.gmtime(1799074800 + n * 86400))
    return {"resource": room, "starts_at": day(start), "ends_at": day(start + nights),
            "start": start, "end": start + nights}


def room_of(i, rooms):
    """Booking i's room; the last two rooms belong to a partner that rejects every reservation."""
    n = i % rooms
    return f"room-reject-{n}" if n >= rooms - 2 else f"room-{n}"


def booking_body(i, slot):
    return {
        "partner": "acme-hotels",
        "resource": slot["resource"],
        "starts_at": slot["starts_at"],
        "ends_at": slot["ends_at"],
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
        self.slot_refusals = 0
        self.created = 0
        self.lived = 0
        self.kills = []

    def fail(self, message):
        with self.lock:
            self.failures.append(message)
        log(f"FAIL {message}")

    # -- the script ------------------------------------------------------------------------------------

    def create_booking(self, i, plan, deadline):
        """Creates booking i; on 409 slot_taken (the room is held for those nights) the guest tries other
        dates of the same room, up to 12 times, with a new Idempotency-Key each time."""
        for attempt in range(12):
            key = f"chaos-booking-{i}-{attempt}"
            headers = {"idempotency-key": key, "x-correlation-id": f"chaos-corr-{i}"}
            body = booking_body(i, plan["slot"])
            status, answer = self.api.call("POST", "/v1/bookings", body, headers)
            if status == 202:
                break
            if status == 409 and (answer or {}).get("code") == "slot_taken":
                with self.lock:
                    self.slot_refusals += 1
                    plan["slot"] = stay(plan["slot"]["resource"], self.rng)
                if attempt < 11 and time.time() < deadline:
                    time.sleep(self.rng.random() * 0.5)
                    continue
                return None
            self.fail(f"booking {i}: create answered {status} {answer}")
            return None
        if plan["retry_create"]:
            again, answer2 = self.api.call("POST", "/v1/bookings", body, headers)
            if again != 202 or answer2.get("booking_id") != answer["booking_id"]:
                self.fail(f"booking {i}: a retried create answered {again} {answer2}, not the same booking")
        with self.lock:
            self.created += 1
        return answer["booking_id"]

    def status_of(self, booking_id):
        status, body = self.api.call("GET", f"/v1/bookings/{booking_id}")
        if status != 200:
            self.fail(f"booking {booking_id}: GET answered {status} {body}")
            return None
        return body["status"]

    def command(self, booking_id, what, body, expect):
        status, answer = self.api.call("POST", f"/v1/bookings/{booking_id}/{what}", body)
        if status != expect:
            self.fail(f"booking {booking_id}: {what} answered {status} {answer}")
        return status == expect

    def drive_booking(self, booking_id, plan, deadline):
        """Cancels early, or waits for the partner's answer, then pays (and maybe cancels) as planned."""
        action = plan["action"]
        if action == "cancel_early":
            # While the partner is still answering (or just answered): a client changing its mind.
            time.sleep(self.rng.random() * 0.5)
            state = self.status_of(booking_id)
            if state in ("requested", "partner_pending", "confirmed"):
                status, answer = self.api.call("POST", f"/v1/bookings/{booking_id}/cancel",
                                               {"reason": "chaos: guest changed plans"})
                # 422: the partner rejected it meanwhile, or the deadline failed it: nothing to cancel.
                if status not in (200, 422):
                    self.fail(f"booking {booking_id}: cancel answered {status} {answer}")
            return
        while time.time() < deadline:
            state = self.status_of(booking_id)
            if state is None:
                return
            if state in ("requested", "partner_pending"):
                time.sleep(0.5)
                continue
            if state != "confirmed":
                return  # rejected or failed: final without us
            card = DECLINED_CARD if action == "decline" else GOOD_CARD
            if not self.command(booking_id, "payment", {"card": card}, 202):
                return
            if action != "refund":
                return
            while time.time() < deadline:
                state = self.status_of(booking_id)
                if state == "payment_pending":
                    time.sleep(0.5)
                    continue
                if state == "paid":
                    self.command(booking_id, "cancel", {"reason": "chaos: paid, then changed plans"}, 200)
                return
            break
        self.fail(f"booking {booking_id}: no answer before the deadline")

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
            # A booking's deadline job waits for its time by design (and then finds the booking settled).
            open_jobs = int(self.db.value(
                "select count(*) from jobs where state in ('queued','running','failed')"
                " and not (kind = 'booking.deadline' and run_at > now())"))
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
        ledger = json.loads(urllib.request.urlopen(self.partner + "/control/ledger", timeout=30).read())
        stats = json.loads(urllib.request.urlopen(self.partner + "/control/stats", timeout=10).read())
        state = {}
        for booking_id in bookings:
            status, body = self.api.call("GET", f"/v1/bookings/{booking_id}")
            state[booking_id] = body if status == 200 else {"status": f"http {status}"}
        counts = {}
        for body in state.values():
            counts[body["status"]] = counts.get(body["status"], 0) + 1
        print("   bookings: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
              + f"; {self.slot_refusals} creates refused with slot_taken, {self.created} created", flush=True)

        # the slot rule
        claims = {r[0] for r in db.rows("select booking_id from resource_claims")}
        leaked = [b for b in claims if state.get(b, {}).get("status") not in HOLDS_SLOT]
        missing = [b for b, body in state.items() if body["status"] in HOLDS_SLOT and b not in claims]
        self.check("no slot is held by a booking whose status does not hold the room", not leaked,
                   f"{len(leaked)}, e.g. {[(b, state.get(b, {}).get('status')) for b in leaked[:5]]}")
        self.check("every live booking holds its slot", not missing, f"{len(missing)}, e.g. {missing[:5]}")
        live = [(b, plans[b]["slot"]) for b, body in state.items() if body["status"] in HOLDS_SLOT]
        overlaps = []
        for x in range(len(live)):
            for y in range(x + 1, len(live)):
                (a, sa), (b, sb) = live[x], live[y]
                if sa["resource"] == sb["resource"] and sa["start"] < sb["end"] and sb["start"] < sa["end"]:
                    overlaps.append((a, b))
        self.check("no two live bookings overlap on one room", not overlaps, f"{overlaps[:3]}")

        # the partner's ledger
        held = [r for r in ledger["reservations"] if r["status"] == "confirmed"]
        orphans = [(r["client_reference"], state.get(r["client_reference"], {}).get("status")) for r in held
                   if state.get(r["client_reference"], {}).get("status") not in HOLDS_SLOT]
        self.check("every reservation the partner holds belongs to a live booking", not orphans,
                   f"{len(orphans)} of {len(held)} held, e.g. {orphans[:5]}")
        per_reference = {}
        for r in ledger["reservations"]:
            per_reference[r["client_reference"]] = per_reference.get(r["client_reference"], 0) + 1
        self.check("the partner holds no booking twice", all(n == 1 for n in per_reference.values()),
                   f"{[k for k, n in per_reference.items() if n > 1][:5]}")

        # the provider's ledger
        captured = [p for p in ledger["payments"] if p["status"] == "captured"]
        charged_per_booking = {}
        for p in captured:
            charged_per_booking[p["client_reference"]] = charged_per_booking.get(p["client_reference"], 0) + 1
        twice = [b for b, n in charged_per_booking.items() if n > 1]
        self.check("no booking was charged twice", not twice, f"{twice[:5]}")
        paid_total = sum(body["amount"]["minor"] for body in state.values() if body["status"] == "paid")
        net = ledger["charged_minor"] - ledger["refunded_minor"]
        refunded = sum(1 for body in state.values() if body["status"] == "refunded")
        self.check("charges minus refunds equal what the paid bookings cost", net == paid_total,
                   f"charged {ledger['charged_minor']} - refunded {ledger['refunded_minor']} = {net}, "
                   f"paid bookings {paid_total}; {len(captured)} charges, {len(ledger['refunds'])} refunds, "
                   f"{refunded} bookings refunded")

        # every booking ends
        dead_for = {r[0] for r in db.rows(
            "select coalesce(payload->>'booking_id', payload->>'visit_id') from jobs where state = 'dead'")}
        stuck = [(b, body["status"]) for b, body in state.items()
                 if body["status"] not in BOOKING_FINAL and not (b in dead_for and body.get("failure_reason"))]
        self.check("every booking is final, or visibly stuck with a reason", not stuck,
                   f"{len(stuck)}, e.g. {stuck[:5]}")
        no_reason = [b for b, body in state.items()
                     if body["status"] in ("failed", "compensation_failed", "refund_failed")
                     and not body.get("failure_reason")]
        self.check("every failed booking says why", not no_reason, f"{no_reason[:5]}")

        # one thread per saga
        threads = db.rows("""
            select aggregate_id, count(distinct metadata->>'correlation_id'), min(metadata->>'correlation_id')
            from events where aggregate_type = 'booking' group by aggregate_id""")
        split = [r for r in threads if int(r[1]) != 1]
        foreign = [r for r in threads if int(r[1]) == 1 and not r[2].startswith("chaos-corr-")]
        self.check("one correlation id per booking, the client's, from request to final state",
                   not split and not foreign, f"{len(split)} split, {len(foreign)} not the client's: "
                   f"{(split + foreign)[:3]}")

        # no duplicates, from the event store
        per_booking = db.rows("""
            select aggregate_id,
                   count(*) filter (where event_type = 'PartnerConfirmed'),
                   count(*) filter (where event_type = 'PaymentCaptured'),
                   count(*) filter (where event_type = 'CompensationCompleted'),
                   count(*) filter (where event_type = 'BookingCancelled'),
                   count(*) filter (where event_type = 'RefundCompleted'),
                   count(distinct payload #>> '{PartnerConfirmed,reservation_id}')
            from events where aggregate_type = 'booking' group by aggregate_id""")
        twice = [r for r in per_booking if any(int(c) > 1 for c in r[1:])]
        self.check("no booking confirmed, paid, compensated, cancelled or refunded twice, none with two "
                   "reservations", not twice, f"{len(twice)} bookings, e.g. {twice[:3]}")

        per_visit = db.rows("""
            select aggregate_id,
                   count(*) filter (where event_type = 'ReportGenerated'),
                   count(*) filter (where event_type = 'ReportSent')
            from events where aggregate_type = 'visit' group by aggregate_id""")
        twice = [r for r in per_visit if int(r[1]) > 1 or int(r[2]) > 1]
        self.check("no visit has two reports or two e-mails recorded", not twice, f"{twice[:3]}")
        sent_events = sum(int(r[2]) for r in per_visit)
        eml = len([f for f in os.listdir(os.path.join(self.data_dir, "mail")) if f.endswith(".eml")]) \
            if os.path.isdir(os.path.join(self.data_dir, "mail")) else 0
        timeouts = int(db.value("select count(*) from notifications where attempts > 1"))
        self.check("one e-mail file per ReportSent (the transport's own record survives the kills)",
                   sent_events == eml,
                   f"events {sent_events}, .eml files {eml}; {timeouts} e-mails needed more than one attempt")

        # nothing lost
        missing = db.rows("""
            select e.event_type, count(*) from events e
            left join jobs j on j.dedupe_key = case e.event_type
                when 'BookingRequested' then 'partner.reserve:' || e.aggregate_id
                when 'PartnerReservationOutcomeUnknown' then 'partner.reconcile:' || e.aggregate_id || ':' || e.sequence
                when 'CompensationStarted' then 'partner.compensate:' || e.aggregate_id
                when 'BookingCancelled' then 'partner.release:' || e.aggregate_id
                when 'BookingFailed' then 'partner.release:' || e.aggregate_id
                when 'PaymentRequested' then 'payment.capture:' || e.aggregate_id
                when 'RefundStarted' then 'payment.refund:' || e.aggregate_id
                when 'VisitCompleted' then 'report.generate:' || e.aggregate_id
                when 'ReportGenerated' then 'report.send:' || e.aggregate_id || ':' || e.sequence end
            where e.event_type in ('BookingRequested','PartnerReservationOutcomeUnknown','CompensationStarted',
                                   'BookingCancelled','BookingFailed','PaymentRequested','RefundStarted',
                                   'VisitCompleted','ReportGenerated')
              and j.id is null
            group by 1""")
        self.check("every event that calls for a job has its job", not missing, f"{missing}")
        states = db.rows("select kind, state, count(*) from jobs group by 1, 2 order by 1, 2")
        print("   jobs: " + ", ".join(f"{k} {s} {c}" for k, s, c in states), flush=True)
        # Deadline jobs wait for their time by design; every other job must be done.
        unfinished = [r for r in states if r[1] not in ("succeeded", "dead") and r[0] != "booking.deadline"]
        self.check("no job is left queued, running or waiting for a retry", not unfinished, f"{unfinished}")
        no_reason = db.value("select count(*) from jobs where state = 'dead' and coalesce(last_error, '') = ''")
        self.check("every dead job says why", int(no_reason) == 0, f"{no_reason} without a reason")
        attempts = db.value("select count(*) from job_attempts")
        expired = db.value("select count(*) from job_attempts where outcome = 'lease_expired'")
        print(f"   {attempts} job attempts in the execution log, {expired} reclaimed after a kill", flush=True)

        cancelled = {r[0] for r in db.rows(
            "select aggregate_id from events where event_type in ('BookingCancelled', 'BookingFailed')")}
        released = {r[0] for r in db.rows(
            "select aggregate_id from events where event_type = 'PartnerReservationReleased'")}
        self.check("every booking cancelled or failed on our side recorded its reservation given back",
                   cancelled <= released, f"{len(cancelled - released)} of {len(cancelled)} not released")

        visit_counts, stuck = {}, []
        for visit_id in visits:
            status, body = self.api.call("GET", f"/v1/visits/{visit_id}")
            if status != 200:
                stuck.append((visit_id, f"http {status}"))
                continue
            vstate = body["status"]
            report, email = body.get("report_status"), body.get("email_status")
            key = vstate if vstate != "completed" else f"completed (report {report}, e-mail {email})"
            visit_counts[key] = visit_counts.get(key, 0) + 1
            settled = vstate in VISIT_FINAL and (vstate != "completed" or (
                report in ("done", "failed") and email in ("done", "failed")))
            if not settled and visit_id not in dead_for:
                stuck.append((visit_id, key))
        print("   visits: " + ", ".join(f"{k} {v}" for k, v in sorted(visit_counts.items())), flush=True)
        self.check("every visit is final with its side effects settled, or visibly dead-lettered",
                   not stuck, f"{len(stuck)}, e.g. {stuck[:5]}")
        print(f"   partner and provider stats {stats}", flush=True)

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
        for body in state.values():
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
                 "--callback-url", f"http://127.0.0.1:{cp}/v1/partner/callbacks",
                 "--payment-webhook-url", f"http://127.0.0.1:{cp}/v1/payments/webhooks"],
                env=env, stdout=sim_log, stderr=subprocess.STDOUT)
            processes.append(sim)
            serve_env = dict(env,
                             TRAILBOOK_COMMAND_ADDR=f"127.0.0.1:{cp}",
                             TRAILBOOK_QUERY_ADDR=f"127.0.0.1:{qp}",
                             TRAILBOOK_PARTNER_URL=f"http://127.0.0.1:{pp}",
                             TRAILBOOK_MAIL_TIMEOUT_AFTER_SUCCESS=str(args.mail_timeouts))
            serve_log = open(os.path.join(work, "serve.log"), "a")

            def start_serve():
                process = subprocess.Popen([binary, "serve"], env=serve_env, stdout=serve_log,
                                           stderr=subprocess.STDOUT)
                processes.append(process)
                return process
            serve = start_serve()
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
                action = ("pay" if roll < 0.55 else "decline" if roll < 0.70 else
                          "cancel_early" if roll < 0.80 else "refund")
                plans[i] = {"action": action, "retry_create": self.rng.random() < 0.10,
                            "slot": stay(room_of(i, args.rooms), self.rng)}
            visit_plans = {}
            for i in range(args.visits):
                roll = self.rng.random()
                visit_plans[i] = "complete" if roll < 0.80 else "cancel" if roll < 0.90 else "no_show"

            started = time.time()
            deadline = time.time() + args.timeout
            log(f"{args.bookings} bookings on {args.rooms} rooms and {args.visits} visits with {args.clients}"
                f" clients; serve is killed with SIGKILL {args.kills} times on the way")
            bookings, visits = {}, []
            stop_killing = threading.Event()

            def killer():
                nonlocal serve
                for n in range(args.kills):
                    # When 30% and 65% of the bookings have lived their script (spread for other counts).
                    target = args.bookings * (30 + 35 * n) // 100 if args.kills == 2 else \
                        args.bookings * (n + 1) // (args.kills + 1)
                    while self.lived < target and not stop_killing.is_set():
                        time.sleep(0.2)
                    if stop_killing.is_set():
                        return
                    time.sleep(self.rng.random() * 2)
                    serve.kill()
                    serve.wait()
                    self.kills.append(time.time() - started)
                    log(f"  killed serve with SIGKILL ({n + 1} of {args.kills}); starting it again")
                    serve = start_serve()
                    wait_healthy(f"http://127.0.0.1:{cp}/healthz", serve)
                    log("  serve is back")

            kill_thread = threading.Thread(target=killer, daemon=True)
            kill_thread.start()

            def booking_life(i):
                booking_id = self.create_booking(i, plans[i], deadline)
                if booking_id:
                    with self.lock:
                        bookings[booking_id] = plans[i]
                    self.drive_booking(booking_id, plans[i], deadline)
                with self.lock:
                    self.lived += 1

            with futures.ThreadPoolExecutor(args.clients) as pool:
                booking_jobs = [pool.submit(booking_life, i) for i in range(args.bookings)]
                visit_jobs = [pool.submit(self.drive_visit, i, visit_plans[i]) for i in range(args.visits)]
                for job in booking_jobs:
                    job.result()
                visits = [v for v in (j.result() for j in visit_jobs) if v]
            stop_killing.set()
            kill_thread.join(timeout=120)
            if len(self.kills) < args.kills:
                self.fail(f"serve was killed {len(self.kills)} times, not {args.kills}")
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
                if p.poll() is None:
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
        print(f"CHAOS RUN PASSED: {len(bookings)} bookings on {args.rooms} rooms ({self.slot_refusals} creates "
              f"refused as slot_taken) and {len(visits)} visits, serve killed {len(self.kills)} times at "
              f"{', '.join(f'{t:.0f} s' for t in self.kills)}; no room sold twice, nobody charged twice, "
              f"nothing duplicated or lost (logs in {work})")
        return 0


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bookings", type=int, default=1000)
    parser.add_argument("--visits", type=int, default=200)
    parser.add_argument("--rooms", type=int, default=50, help="rooms the bookings share")
    parser.add_argument("--kills", type=int, default=2, help="how often serve is killed with SIGKILL")
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
