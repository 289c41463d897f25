"""A leadflow client in Python, on code generated from proto/ with grpcio-tools: creates a
form, submits it over gRPC and over capture's HTTP ingress, tracks two activities and waits
for scoring to show their points. Every answer is checked; a wrong one ends the run with a
non-zero exit status, so the example doubles as an end-to-end test of the contracts.

    python leadflow_example.py --target 127.0.0.1:50051 --ingress http://127.0.0.1:8080

The generated modules (leadflow/...) must be importable: scripts/python-example.sh
generates them and puts their directory on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import urllib.error
import urllib.request
import uuid

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from leadflow.capture.v1 import capture_service_pb2 as capture
from leadflow.capture.v1 import capture_service_pb2_grpc as capture_grpc
from leadflow.common.v1 import common_pb2 as common
from leadflow.events.v1 import events_pb2 as events
from leadflow.scoring.v1 import scoring_service_pb2 as scoring
from leadflow.scoring.v1 import scoring_service_pb2_grpc as scoring_grpc

SERVICES = (
    "leadflow.capture.v1.CaptureService",
    "leadflow.scoring.v1.ScoringService",
    "leadflow.nurturing.v1.NurturingService",
    "leadflow.routing.v1.RoutingService",
)
PRODUCT = "erp"
ORIGIN = "https://www.example.com"
# The points of the seed model a product without a model of its own is scored with.
ACTIVITIES = {
    common.ACTIVITY_TYPE_FACT_SHEET_REQUESTED: 20,
    common.ACTIVITY_TYPE_VIDEO_COMPLETED: 30,
}


class WrongAnswer(Exception):
    """The server answered, but not what the contract promises."""


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise WrongAnswer(message)


def wait_until_serving(channel: grpc.Channel, timeout: float) -> None:
    """Waits until every service's named health entry is SERVING (the empty name always
    is, so it says nothing about the services)."""
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout
    for service in SERVICES:
        while True:
            try:
                status = health.Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=2
                ).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError as error:
                if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND):
                    raise
            if time.monotonic() > deadline:
                raise WrongAnswer(f"{service} is not SERVING after {timeout:g} s")
            time.sleep(0.2)
        print(f"health: {service} SERVING")


def create_form(stub: capture_grpc.CaptureServiceStub, run: str) -> capture.Form:
    field = capture.FormField
    form = capture.Form(
        name=f"ERP checklist ({run})",
        product=PRODUCT,
        fields=[
            field(name="email", label="Email", kind=capture.FORM_FIELD_KIND_EMAIL,
                  maps_to="contact.email", required=True),
            field(name="first_name", label="First name", kind=capture.FORM_FIELD_KIND_TEXT,
                  maps_to="contact.first_name", required=True),
            field(name="company", label="Company", kind=capture.FORM_FIELD_KIND_TEXT,
                  maps_to="lead.company_name", required=True),
        ],
        consent_wording="Send me ERP news by mail.",
        consent_wording_version="2026-11",
        allowed_origins=[ORIGIN],
    )
    created = stub.CreateForm(
        capture.CreateFormRequest(form=form, idempotency_key=f"{run}-form")
    ).form
    expect(bool(created.form_id), "CreateForm returned no form_id")
    expect(created.revision == 1, f"a new form has revision 1, not {created.revision}")
    expect(created.state == capture.FORM_STATE_ACTIVE, "a new form is not active")
    print(f"capture: form {created.form_id} created")
    return created


def submit_over_grpc(stub, form: capture.Form, run: str) -> capture.SubmitFormResponse:
    request = capture.SubmitFormRequest(
        form_id=form.form_id,
        values={
            "email": f"ada@{run}-werke.com",
            "first_name": "Ada",
            "company": f"{run} Werke AG",
        },
        consent_given=True,
        idempotency_key=f"{run}-submit",
    )
    submitted = stub.SubmitForm(request)
    expect(bool(submitted.contact_id and submitted.lead_id), "SubmitForm returned no ids")
    expect(
        submitted.contact_outcome == capture.RECORD_OUTCOME_CREATED,
        f"a new contact's outcome is {capture.RecordOutcome.Name(submitted.contact_outcome)}",
    )
    # Single opt-in: the consent is confirmed at once, no confirmation mail goes out.
    expect(
        submitted.consent_state == events.CONSENT_STATE_CONFIRMED,
        f"consent is {events.ConsentState.Name(submitted.consent_state)}, not confirmed",
    )
    expect(not submitted.confirmation_sent, "a single opt-in form sent a confirmation mail")
    # A retry with the same key gets the first answer and writes nothing again.
    retried = stub.SubmitForm(request)
    expect(
        (retried.contact_id, retried.lead_id) == (submitted.contact_id, submitted.lead_id),
        "a retried SubmitForm answered other ids",
    )
    print(f"capture: contact {submitted.contact_id} of lead {submitted.lead_id} captured")
    return submitted


def post_form(ingress: str, form_id: str, body: dict, origin: str) -> tuple[int, dict, dict]:
    request = urllib.request.Request(
        f"{ingress}/v1/forms/{form_id}/submissions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Origin": origin},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.load(error)


def submit_over_http(stub, ingress: str, form: capture.Form, run: str) -> None:
    """What a web page does: a JSON post to capture's ingress from an allowed origin."""
    email = f"grace@{run}-werke.com"
    body = {"email": email, "first_name": "Grace", "company": f"{run} Werke AG",
            "consent_given": True, "idempotency_key": f"{run}-http"}
    status, headers, answer = post_form(ingress, form.form_id, body, ORIGIN)
    expect(status == 200, f"the ingress answered {status}: {answer}")
    expect(answer.get("status") == "accepted", f"the ingress answered {answer}")
    expect(
        headers.get("access-control-allow-origin", headers.get("Access-Control-Allow-Origin"))
        == ORIGIN,
        "the ingress did not allow the form's origin (CORS)",
    )
    status, _, answer = post_form(ingress, form.form_id, body, "https://evil.example.net")
    expect(status == 403, f"a post from a foreign origin got {status}, not 403")
    contact = stub.GetContact(capture.GetContactRequest(email=email)).contact
    expect(contact.profile.first_name == "Grace", "the posted contact is not recorded")
    print(f"capture: contact {contact.contact_id} captured over HTTP, a foreign origin refused")


def track_activities(stub, submitted: capture.SubmitFormResponse, run: str) -> None:
    for activity_type in ACTIVITIES:
        tracked = stub.TrackActivity(
            capture.TrackActivityRequest(
                activity=capture.ActivityInput(
                    contact_id=submitted.contact_id,
                    type=activity_type,
                    product=PRODUCT,
                    source="website",
                ),
                idempotency_key=f"{run}-activity-{activity_type}",
            )
        ).activity
        expect(
            tracked.lead_id == submitted.lead_id,
            f"the activity went to lead {tracked.lead_id}, not {submitted.lead_id}",
        )
        print(f"capture: {common.ActivityType.Name(activity_type)} tracked")


def wait_for_score(stub, lead_id: str, timeout: float) -> scoring.LeadScore:
    """Scoring applies capture's events on its own time: polls until the activities'
    points show (NOT_FOUND until scoring has seen the lead at all)."""
    expected = sum(ACTIVITIES.values())
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = stub.GetScore(scoring.GetScoreRequest(lead_id=lead_id, product=PRODUCT)).score
            # The points fade with a 90-day half-life: a few seconds cost next to nothing.
            if math.isclose(last.engagement_points, expected, abs_tol=0.01):
                return last
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
        time.sleep(0.25)
    raise WrongAnswer(f"lead {lead_id} never reached {expected} engagement points; last: {last}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="the gRPC address, e.g. 127.0.0.1:50051")
    parser.add_argument("--ingress", help="capture's HTTP ingress, e.g. http://127.0.0.1:8080")
    parser.add_argument("--timeout", type=float, default=30, help="seconds to wait for a state")
    args = parser.parse_args()
    # Names unique to this run, so it also works against a server that already has data.
    run = f"run{uuid.uuid4().hex[:10]}"
    with grpc.insecure_channel(args.target) as channel:
        wait_until_serving(channel, args.timeout)
        captures = capture_grpc.CaptureServiceStub(channel)
        scores = scoring_grpc.ScoringServiceStub(channel)
        try:
            form = create_form(captures, run)
            submitted = submit_over_grpc(captures, form, run)
            if args.ingress:
                submit_over_http(captures, args.ingress.rstrip("/"), form, run)
            track_activities(captures, submitted, run)
            score = wait_for_score(scores, submitted.lead_id, args.timeout)
        except WrongAnswer as wrong:
            print(f"error: {wrong}", file=sys.stderr)
            return 1
        except grpc.RpcError as error:
            print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    try:
        expect(score.lead_id == submitted.lead_id and score.product == PRODUCT, "score of another lead")
        expect(score.model_version >= 1, "the score names no model version")
        expect(
            math.isclose(score.total_points, score.fit_points + score.engagement_points, abs_tol=1e-6),
            "total points are not fit plus engagement",
        )
    except WrongAnswer as wrong:
        print(f"error: {wrong}", file=sys.stderr)
        return 1
    print(
        f"scoring: lead {score.lead_id} has {score.engagement_points:.2f} engagement points, "
        f"{score.total_points:.2f} in all ({common.LeadClass.Name(score.lead_class)}, "
        f"{common.LifecycleStage.Name(score.stage)})"
    )
    print("the example got every answer it expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
