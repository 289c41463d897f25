//! Nurturing's enrollment, send, frequency and report handlers on both stores (PostgreSQL
//! and the embedded SQLite), on the engine bench of `nurture_engine` (a clock the test moves,
//! a real SMTP sink, events handed to nurturing as its consumer would): an enrollment paused
//! by hand gets no mail until it is resumed, is due at once (within the frequency cap) when
//! resumed, and ends for good when stopped, and every one of these calls answers a retry
//! the same and refuses what the contract refuses; EnrollContact checks its request and a
//! later start time holds the first mail back; enrollments and sends page newest first and
//! refuse a token of another listing, and sends filter by due time; the frequency cap has
//! its defaults, a global policy and per-contact overrides, counts the sends of its window
//! and defers a due alternative offer; quiet hours are read in the track's time zone; a
//! contact whose cell ran dry is flagged, counted in the content grid, and taken up again
//! by a new item of its cell; and the nurture report counts sends, opens, clicks, rates
//! and enrollment outcomes exactly.

use std::fmt::Debug;

use chrono::{DateTime, Duration, Utc};
use leadflow_nurturing::SchedulerReport;
use leadflow_platform::time::{Clock, to_timestamp};
use leadflow_proto::{
    common::v1::{ActivityType, BuyingStage, ContactProfile, LeadClass, LeadProfile, TimeRange},
    events::v1::{self as events, ConsentState, event_envelope::Payload},
    nurturing::v1::{
        CellStats, ContentItem, ContentItemStats, ContentKind, CreateTrackRequest,
        EnrollContactRequest, Enrollment, EnrollmentState, FrequencyCap, FrequencyPolicy,
        GetContentGridRequest, GetFrequencyCapRequest, GetNurtureReportRequest,
        GetNurtureReportResponse, ListEnrollmentsRequest, ListSendsRequest, NurtureStats,
        PauseEnrollmentRequest, PublishTrackVersionRequest, QuietHours, ResumeEnrollmentRequest,
        Send, SetFrequencyPolicyRequest, StopEnrollmentRequest, TimeZoneMode, Track, TrackStats,
        TrackVersion, nurturing_service_server::NurturingService,
    },
};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;
use uuid::Uuid;

use crate::{
    nurture_engine::{Bench, Contact, IT_MANAGER, Library, PRODUCT, bench, key, sent, time_of},
    routing_assign::{on_both_stores, utc},
};

/// The status of a call that must fail, after checking its code.
fn refused<T: Debug>(result: Result<T, Status>, code: Code) -> Status {
    let status = result.expect_err("the call is refused");
    assert_eq!(status.code(), code, "{status:?}");
    status
}

/// The fields an INVALID_ARGUMENT refusal names, sorted.
fn violated_fields<T: Debug>(result: Result<T, Status>) -> Vec<String> {
    let mut fields: Vec<String> = refused(result, Code::InvalidArgument)
        .get_details_bad_request()
        .expect("bad request details")
        .field_violations
        .into_iter()
        .map(|violation| violation.field)
        .collect();
    fields.sort();
    fields
}

fn at(time: DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(to_timestamp(time))
}

fn days(count: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: count * 86_400,
        nanos: 0,
    })
}

fn range(start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>) -> Option<TimeRange> {
    Some(TimeRange {
        start_time: start.map(to_timestamp),
        end_time: end.map(to_timestamp),
    })
}

fn no_report() -> SchedulerReport {
    SchedulerReport::default()
}

async fn pause(
    bench: &Bench,
    enrollment_id: &str,
    reason: &str,
    key: &str,
) -> Result<Enrollment, Status> {
    let response = bench
        .api
        .pause_enrollment(Request::new(PauseEnrollmentRequest {
            enrollment_id: enrollment_id.to_owned(),
            reason: reason.to_owned(),
            idempotency_key: key.to_owned(),
        }))
        .await?;
    Ok(response.into_inner().enrollment.expect("enrollment"))
}

async fn resume(bench: &Bench, enrollment_id: &str, key: &str) -> Result<Enrollment, Status> {
    let response = bench
        .api
        .resume_enrollment(Request::new(ResumeEnrollmentRequest {
            enrollment_id: enrollment_id.to_owned(),
            idempotency_key: key.to_owned(),
        }))
        .await?;
    Ok(response.into_inner().enrollment.expect("enrollment"))
}

async fn stop(
    bench: &Bench,
    enrollment_id: &str,
    reason: &str,
    key: &str,
) -> Result<Enrollment, Status> {
    let response = bench
        .api
        .stop_enrollment(Request::new(StopEnrollmentRequest {
            enrollment_id: enrollment_id.to_owned(),
            reason: reason.to_owned(),
            idempotency_key: key.to_owned(),
        }))
        .await?;
    Ok(response.into_inner().enrollment.expect("enrollment"))
}

async fn enroll(bench: &Bench, request: EnrollContactRequest) -> Result<Enrollment, Status> {
    let response = bench.api.enroll_contact(Request::new(request)).await?;
    Ok(response.into_inner().enrollment.expect("enrollment"))
}

/// The enrollment of `contact` in the library's track, the first mail due at `start`.
fn enroll_request(
    contact: &Contact,
    track_id: &str,
    start: Option<DateTime<Utc>>,
) -> EnrollContactRequest {
    EnrollContactRequest {
        contact_id: contact.contact_id.clone(),
        track_id: track_id.to_owned(),
        start_time: start.map(to_timestamp),
        idempotency_key: key(),
        ..EnrollContactRequest::default()
    }
}

async fn get_state(bench: &Bench, enrollment_id: &str) -> anyhow::Result<Enrollment> {
    Ok(bench
        .get(enrollment_id)
        .await?
        .enrollment
        .expect("enrollment"))
}

async fn list_enrollments(
    bench: &Bench,
    request: ListEnrollmentsRequest,
) -> Result<(Vec<Enrollment>, String), Status> {
    let response = bench
        .api
        .list_enrollments(Request::new(request))
        .await?
        .into_inner();
    Ok((response.enrollments, response.next_page_token))
}

async fn list_sends(
    bench: &Bench,
    request: ListSendsRequest,
) -> Result<(Vec<Send>, String), Status> {
    let response = bench
        .api
        .list_sends(Request::new(request))
        .await?
        .into_inner();
    Ok((response.sends, response.next_page_token))
}

/// The ids of the sends of `contact` due within `[start, end)`, newest first.
async fn sends_due(
    bench: &Bench,
    contact: &Contact,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
) -> anyhow::Result<Vec<String>> {
    let (sends, next) = list_sends(
        bench,
        ListSendsRequest {
            contact_id: contact.contact_id.clone(),
            time_range: range(start, end),
            ..ListSendsRequest::default()
        },
    )
    .await?;
    assert!(next.is_empty());
    Ok(sends.into_iter().map(|send| send.send_id).collect())
}

async fn frequency_cap(bench: &Bench, contact_id: &str) -> Result<FrequencyCap, Status> {
    let response = bench
        .api
        .get_frequency_cap(Request::new(GetFrequencyCapRequest {
            contact_id: contact_id.to_owned(),
        }))
        .await?;
    Ok(response.into_inner().cap.expect("cap"))
}

async fn set_policy(
    bench: &Bench,
    contact_id: &str,
    policy: Option<FrequencyPolicy>,
    key: &str,
) -> Result<FrequencyCap, Status> {
    let response = bench
        .api
        .set_frequency_policy(Request::new(SetFrequencyPolicyRequest {
            contact_id: contact_id.to_owned(),
            policy,
            idempotency_key: key.to_owned(),
        }))
        .await?;
    Ok(response.into_inner().cap.expect("cap"))
}

async fn report(
    bench: &Bench,
    request: GetNurtureReportRequest,
) -> Result<GetNurtureReportResponse, Status> {
    Ok(bench
        .api
        .get_nurture_report(Request::new(request))
        .await?
        .into_inner())
}

/// The library track's templates in a version of the given policy.
fn version_of(library: &Library, version: TrackVersion) -> TrackVersion {
    TrackVersion {
        offer_template_id: library.offer_template_id.clone(),
        alternative_offer_template_id: library.alternative_template_id.clone(),
        ..version
    }
}

/// Publishes `version` as the library track's next version.
async fn publish(bench: &Bench, library: &Library, version: TrackVersion) -> anyhow::Result<u32> {
    Ok(bench
        .api
        .publish_track_version(Request::new(PublishTrackVersionRequest {
            track_id: library.track_id.clone(),
            version: Some(version_of(library, version)),
            expected_latest_version: 0,
            idempotency_key: key(),
        }))
        .await?
        .into_inner()
        .version
        .expect("version")
        .version)
}

/// A second track of the product, on the library's templates, that enrolls nobody by
/// itself.
async fn manual_track(bench: &Bench, library: &Library, name: &str) -> anyhow::Result<String> {
    Ok(bench
        .api
        .create_track(Request::new(CreateTrackRequest {
            track: Some(Track {
                name: name.to_owned(),
                product: PRODUCT.to_owned(),
                ..Track::default()
            }),
            first_version: Some(version_of(library, TrackVersion::default())),
            idempotency_key: key(),
        }))
        .await?
        .into_inner()
        .track
        .expect("track")
        .track_id)
}

/// Capture's word that an IT manager of a new lead living in `time_zone` was captured for
/// the product with a confirmed opt-in.
async fn capture_in_zone(bench: &Bench, name: &str, time_zone: &str) -> anyhow::Result<Contact> {
    let contact = Contact {
        contact_id: Uuid::now_v7().to_string(),
        lead_id: Uuid::now_v7().to_string(),
        email: format!("{name}@buyer.example.com"),
    };
    bench
        .deliver(
            "capture",
            &contact.lead_id,
            Payload::ContactCaptured(events::ContactCaptured {
                contact_id: contact.contact_id.clone(),
                lead_id: contact.lead_id.clone(),
                contact: Some(ContactProfile {
                    email: contact.email.clone(),
                    first_name: name.to_owned(),
                    last_name: "Buyer".to_owned(),
                    buyer_role: IT_MANAGER.to_owned(),
                    job_title: "Head of IT".to_owned(),
                    language: "en".to_owned(),
                    time_zone: time_zone.to_owned(),
                    ..ContactProfile::default()
                }),
                lead: Some(LeadProfile {
                    company_name: "Example Engines Ltd".to_owned(),
                    ..LeadProfile::default()
                }),
                product: PRODUCT.to_owned(),
                source: "website".to_owned(),
                consent_state: ConsentState::Confirmed.into(),
                contact_created: true,
                lead_created: true,
                ..events::ContactCaptured::default()
            }),
        )
        .await?;
    Ok(contact)
}

/// Capture's word that `contact` reacted to the mail `send_id` now: an open or a click.
async fn react(
    bench: &Bench,
    contact: &Contact,
    send_id: &str,
    reaction: ActivityType,
) -> anyhow::Result<()> {
    bench
        .deliver(
            "capture",
            &contact.lead_id,
            Payload::ActivityRecorded(events::ActivityRecorded {
                activity_id: Uuid::now_v7().to_string(),
                contact_id: contact.contact_id.clone(),
                lead_id: contact.lead_id.clone(),
                r#type: reaction.into(),
                product: PRODUCT.to_owned(),
                occurred_at: at(bench.clock.now()),
                source: "email".to_owned(),
                send_id: send_id.to_owned(),
                ..events::ActivityRecorded::default()
            }),
        )
        .await
}

/// The one send of `contact` so far.
async fn only_send(bench: &Bench, contact: &Contact) -> anyhow::Result<Send> {
    let enrollment = bench.enrollment_of(contact).await?;
    let mut sends = bench.get(&enrollment.enrollment_id).await?.sends;
    assert_eq!(sends.len(), 1, "{}: one send", contact.email);
    Ok(sends.remove(0))
}

async fn pause_resume_and_stop_change_an_enrollment_by_hand(bench: Bench) -> anyhow::Result<()> {
    bench.library().await?;
    let t0 = bench.clock.now();
    let ada = bench.capture("ada", ConsentState::Confirmed).await?;
    let bo = bench.capture("bo", ConsentState::Confirmed).await?;
    let ada_id = bench.enrollment_of(&ada).await?.enrollment_id;
    let bo_id = bench.enrollment_of(&bo).await?.enrollment_id;
    assert_eq!(bench.run_due().await?, sent(2));

    // The request is checked first.
    for (enrollment_id, idempotency_key, fields) in [
        ("", "k", vec!["enrollment_id"]),
        ("not-a-uuid", "k", vec!["enrollment_id"]),
        (ada_id.as_str(), "", vec!["idempotency_key"]),
        ("", "", vec!["enrollment_id", "idempotency_key"]),
    ] {
        assert_eq!(
            violated_fields(pause(&bench, enrollment_id, "", idempotency_key).await),
            fields,
            "pause {enrollment_id:?} {idempotency_key:?}"
        );
        assert_eq!(
            violated_fields(resume(&bench, enrollment_id, idempotency_key).await),
            fields,
            "resume {enrollment_id:?} {idempotency_key:?}"
        );
        assert_eq!(
            violated_fields(stop(&bench, enrollment_id, "", idempotency_key).await),
            fields,
            "stop {enrollment_id:?} {idempotency_key:?}"
        );
    }
    let unknown = Uuid::now_v7().to_string();
    refused(pause(&bench, &unknown, "", &key()).await, Code::NotFound);
    refused(resume(&bench, &unknown, &key()).await, Code::NotFound);
    refused(stop(&bench, &unknown, "", &key()).await, Code::NotFound);

    // Paused an hour after the first mail.
    bench.clock.advance(Duration::hours(1));
    let paused_at = bench.clock.now();
    let pause_key = key();
    let paused = pause(&bench, &ada_id, "trade fair", &pause_key).await?;
    assert_eq!(paused.state(), EnrollmentState::Paused);
    assert_eq!(paused.state_reason, "trade fair");
    assert_eq!(time_of(paused.state_change_time.as_ref()), Some(paused_at));
    assert_eq!(paused.next_due_time, None, "nothing is due while paused");
    assert_eq!(paused.end_time, None, "a pause ends nothing");
    assert_eq!(get_state(&bench, &ada_id).await?, paused);

    // A retry answers the same; the key with another request is refused.
    bench.clock.advance(Duration::minutes(5));
    assert_eq!(
        pause(&bench, &ada_id, "trade fair", &pause_key).await?,
        paused
    );
    refused(
        pause(&bench, &ada_id, "holidays", &pause_key).await,
        Code::AlreadyExists,
    );
    refused(
        stop(&bench, &ada_id, "trade fair", &pause_key).await,
        Code::AlreadyExists,
    );
    // Pausing a paused enrollment changes nothing, not even its reason.
    assert_eq!(pause(&bench, &ada_id, "holidays", &key()).await?, paused);
    assert_eq!(get_state(&bench, &ada_id).await?, paused);

    // Past the reaction window bo gets its alternative offer; paused ada gets nothing.
    bench.clock.set(t0 + Duration::days(7));
    assert_eq!(bench.run_due().await?, sent(1));
    bench.clock.set(t0 + Duration::days(8));
    assert_eq!(bench.run_due().await?, no_report());
    assert_eq!(bench.received_by(&ada)?.len(), 1, "no mail while paused");
    assert_eq!(bench.received_by(&bo)?.len(), 2);

    // Resumed: active, and due at once.
    let resumed_at = bench.clock.now();
    let resume_key = key();
    let resumed = resume(&bench, &ada_id, &resume_key).await?;
    assert_eq!(resumed.state(), EnrollmentState::Active);
    assert_eq!(resumed.state_reason, "resumed by hand");
    assert_eq!(
        time_of(resumed.state_change_time.as_ref()),
        Some(resumed_at)
    );
    assert_eq!(time_of(resumed.next_due_time.as_ref()), Some(resumed_at));
    assert_eq!(resume(&bench, &ada_id, &resume_key).await?, resumed);
    refused(
        pause(&bench, &ada_id, "", &resume_key).await,
        Code::AlreadyExists,
    );
    // The pause's key still answers the pause, and pauses nothing.
    assert_eq!(
        pause(&bench, &ada_id, "trade fair", &pause_key).await?,
        paused
    );
    assert_eq!(get_state(&bench, &ada_id).await?, resumed);
    // Resuming an active enrollment changes nothing.
    assert_eq!(resume(&bench, &ada_id, &key()).await?, resumed);

    // Bo, paused and resumed a day after its last mail, is due at once too, but the
    // frequency cap (two days between mails) holds its mail back.
    pause(&bench, &bo_id, "", &key()).await?;
    let bo_resumed = resume(&bench, &bo_id, &key()).await?;
    assert_eq!(time_of(bo_resumed.next_due_time.as_ref()), Some(resumed_at));
    assert_eq!(
        bench.run_due().await?,
        SchedulerReport {
            sent: 1,
            deferred: 1,
            ..SchedulerReport::default()
        },
        "ada's alternative offer goes; bo's waits for the cap"
    );
    let record = bench.get(&ada_id).await?;
    assert_eq!(record.sends.len(), 2);
    assert_eq!((record.sends[1].step, record.sends[1].attempt), (1, 2));
    assert_eq!(
        time_of(record.sends[1].send_time.as_ref()),
        Some(resumed_at)
    );
    assert_eq!(bench.received_by(&ada)?.len(), 2);
    assert_eq!(
        time_of(get_state(&bench, &bo_id).await?.next_due_time.as_ref()),
        Some(t0 + Duration::days(9)),
        "two days after bo's last mail"
    );

    // Stopped: ended for good.
    bench.clock.advance(Duration::hours(1));
    let stopped_at = bench.clock.now();
    let stop_key = key();
    let stopped = stop(&bench, &ada_id, "asked on the phone", &stop_key).await?;
    assert_eq!(stopped.state(), EnrollmentState::Stopped);
    assert_eq!(stopped.state_reason, "asked on the phone");
    assert_eq!(time_of(stopped.end_time.as_ref()), Some(stopped_at));
    assert_eq!(
        time_of(stopped.state_change_time.as_ref()),
        Some(stopped_at)
    );
    assert_eq!(stopped.next_due_time, None);
    bench.clock.advance(Duration::hours(1));
    assert_eq!(
        stop(&bench, &ada_id, "asked on the phone", &stop_key).await?,
        stopped
    );
    assert_eq!(
        stop(&bench, &ada_id, "again", &key()).await?,
        stopped,
        "stopping a stopped enrollment changes nothing"
    );
    refused(
        resume(&bench, &ada_id, &key()).await,
        Code::FailedPrecondition,
    );
    refused(
        pause(&bench, &ada_id, "", &key()).await,
        Code::FailedPrecondition,
    );
    assert_eq!(get_state(&bench, &ada_id).await?, stopped);

    // Bo's third try, then its end: exhausted.
    bench.clock.set(t0 + Duration::days(9));
    assert_eq!(bench.run_due().await?, sent(1));
    bench.clock.set(t0 + Duration::days(16));
    assert_eq!(
        bench.run_due().await?,
        SchedulerReport {
            exhausted: 1,
            ..SchedulerReport::default()
        }
    );
    let exhausted = get_state(&bench, &bo_id).await?;
    assert_eq!(exhausted.state(), EnrollmentState::Exhausted);
    refused(
        resume(&bench, &bo_id, &key()).await,
        Code::FailedPrecondition,
    );
    refused(
        pause(&bench, &bo_id, "", &key()).await,
        Code::FailedPrecondition,
    );
    refused(
        stop(&bench, &bo_id, "", &key()).await,
        Code::FailedPrecondition,
    );
    assert_eq!(get_state(&bench, &bo_id).await?, exhausted);

    // A paused contact who withdraws its consent cannot be resumed.
    let cleo = bench.capture("cleo", ConsentState::Confirmed).await?;
    let cleo_id = bench.enrollment_of(&cleo).await?.enrollment_id;
    pause(&bench, &cleo_id, "", &key()).await?;
    bench.clock.advance(Duration::hours(1));
    bench.unsubscribe(&cleo).await?;
    refused(
        resume(&bench, &cleo_id, &key()).await,
        Code::FailedPrecondition,
    );
    assert_ne!(
        get_state(&bench, &cleo_id).await?.state(),
        EnrollmentState::Active
    );

    // Months on, ada got nothing after its stop, bo nothing after its end, cleo nothing.
    bench
        .nothing_happens_until(t0 + Duration::days(90), Duration::days(10))
        .await?;
    assert_eq!(bench.received_by(&ada)?.len(), 2);
    assert_eq!(bench.received_by(&bo)?.len(), 3);
    assert!(bench.received_by(&cleo)?.is_empty());
    Ok(())
}

async fn enroll_contact_checks_its_request_and_a_later_start_holds_the_first_mail(
    bench: Bench,
) -> anyhow::Result<()> {
    let library = bench.library().await?;
    // Version 2 enrolls nobody by itself: contacts get in through EnrollContact alone.
    assert_eq!(publish(&bench, &library, TrackVersion::default()).await?, 2);
    let t0 = bench.clock.now();
    let ada = bench.capture("ada", ConsentState::Confirmed).await?;
    let bo = bench.capture("bo", ConsentState::Confirmed).await?;
    let nora = bench
        .capture_into(
            &Uuid::now_v7().to_string(),
            "nora",
            "",
            ConsentState::Confirmed,
        )
        .await?;
    assert!(bench.enrollments_of(&ada).await?.is_empty());
    let track = library.track_id.as_str();

    assert_eq!(
        violated_fields(enroll(&bench, EnrollContactRequest::default()).await),
        ["contact_id", "idempotency_key", "track_id"]
    );
    assert_eq!(
        violated_fields(
            enroll(
                &bench,
                EnrollContactRequest {
                    contact_id: "ada".to_owned(),
                    track_id: "erp".to_owned(),
                    idempotency_key: key(),
                    ..EnrollContactRequest::default()
                }
            )
            .await
        ),
        ["contact_id", "track_id"]
    );
    assert_eq!(
        violated_fields(
            enroll(
                &bench,
                enroll_request(&ada, track, Some(t0 - Duration::minutes(2)))
            )
            .await
        ),
        ["start_time"]
    );
    let stranger = Contact {
        contact_id: Uuid::now_v7().to_string(),
        lead_id: Uuid::now_v7().to_string(),
        email: "stranger@buyer.example.com".to_owned(),
    };
    refused(
        enroll(&bench, enroll_request(&stranger, track, None)).await,
        Code::NotFound,
    );
    refused(
        enroll(
            &bench,
            enroll_request(&ada, &Uuid::now_v7().to_string(), None),
        )
        .await,
        Code::NotFound,
    );
    refused(
        enroll(
            &bench,
            EnrollContactRequest {
                track_version: 3,
                ..enroll_request(&ada, track, None)
            },
        )
        .await,
        Code::NotFound,
    );
    refused(
        enroll(&bench, enroll_request(&nora, track, None)).await,
        Code::FailedPrecondition,
    );
    assert!(bench.enrollments_of(&ada).await?.is_empty());
    assert!(bench.enrollments_of(&nora).await?.is_empty());

    // Ada on version 1, her first mail three days from now.
    let start = t0 + Duration::days(3);
    let request = EnrollContactRequest {
        track_version: 1,
        ..enroll_request(&ada, track, Some(start))
    };
    let enrolled = enroll(&bench, request.clone()).await?;
    assert_eq!(enrolled.state(), EnrollmentState::Active);
    assert_eq!(enrolled.contact_id, ada.contact_id);
    assert_eq!(enrolled.lead_id, ada.lead_id);
    assert_eq!(enrolled.track_id, library.track_id);
    assert_eq!(enrolled.track_version, 1);
    assert_eq!(enrolled.product, PRODUCT);
    assert_eq!(enrolled.buyer_role, IT_MANAGER);
    assert_eq!(enrolled.stage(), BuyingStage::ProblemAwareness);
    assert_eq!((enrolled.step, enrolled.attempt), (0, 0));
    assert_eq!(time_of(enrolled.enroll_time.as_ref()), Some(t0));
    assert_eq!(time_of(enrolled.next_due_time.as_ref()), Some(start));
    assert_eq!(enrolled.end_time, None);
    bench.clock.advance(Duration::seconds(10));
    assert_eq!(enroll(&bench, request.clone()).await?, enrolled, "a retry");
    refused(
        enroll(
            &bench,
            EnrollContactRequest {
                start_time: at(start + Duration::days(1)),
                ..request.clone()
            },
        )
        .await,
        Code::AlreadyExists,
    );
    refused(
        enroll(&bench, enroll_request(&ada, track, None)).await,
        Code::AlreadyExists,
    );
    assert_eq!(
        bench.enrollments_of(&ada).await?,
        std::slice::from_ref(&enrolled)
    );

    // Bo on the latest version, a start half a minute ago counting as now.
    let bo_enrolled = enroll(
        &bench,
        enroll_request(&bo, track, Some(bench.clock.now() - Duration::seconds(30))),
    )
    .await?;
    assert_eq!(bo_enrolled.track_version, 2);
    assert_eq!(
        time_of(bo_enrolled.next_due_time.as_ref()),
        Some(bench.clock.now())
    );
    assert_eq!(
        bench.run_due().await?,
        sent(1),
        "bo's first mail, not ada's"
    );
    assert_eq!(bench.received_by(&bo)?.len(), 1);

    bench
        .nothing_happens_until(start - Duration::seconds(1), Duration::days(1))
        .await?;
    assert!(
        bench.received_by(&ada)?.is_empty(),
        "nothing before the start"
    );
    bench.clock.set(start);
    assert_eq!(bench.run_due().await?, sent(1));
    assert_eq!(bench.received_by(&ada)?.len(), 1);
    let first = only_send(&bench, &ada).await?;
    assert_eq!(time_of(first.due_time.as_ref()), Some(start));
    assert_eq!(time_of(first.send_time.as_ref()), Some(start));
    assert_eq!(first.track_version, 1);

    // Once stopped, bo may be enrolled in the track again.
    stop(&bench, &bo_enrolled.enrollment_id, "", &key()).await?;
    let again = enroll(&bench, enroll_request(&bo, track, None)).await?;
    assert_ne!(again.enrollment_id, bo_enrolled.enrollment_id);
    assert_eq!(again.state(), EnrollmentState::Active);
    Ok(())
}

async fn enrollments_and_sends_page_newest_first(bench: Bench) -> anyhow::Result<()> {
    let library = bench.library().await?;
    let webinar_track = manual_track(&bench, &library, "ERP webinar follow-up").await?;
    let t0 = bench.clock.now();
    let ada = bench.capture("ada", ConsentState::Confirmed).await?;
    bench.clock.advance(Duration::minutes(1));
    let bo = bench.capture("bo", ConsentState::Confirmed).await?;
    bench.clock.advance(Duration::minutes(1));
    let cleo = bench.capture("cleo", ConsentState::Confirmed).await?;
    bench.clock.advance(Duration::minutes(1));
    // Ada's second enrollment starts long after the sends this test looks at.
    let ada_webinar = enroll(
        &bench,
        enroll_request(&ada, &webinar_track, Some(t0 + Duration::days(60))),
    )
    .await?;
    let newest_first = vec![
        ada_webinar.enrollment_id.clone(),
        bench.enrollment_of(&cleo).await?.enrollment_id,
        bench.enrollment_of(&bo).await?.enrollment_id,
        bench
            .enrollments_of(&ada)
            .await?
            .into_iter()
            .find(|enrollment| enrollment.track_id == library.track_id)
            .expect("ada's B1 enrollment")
            .enrollment_id,
    ];

    // Page by page: every enrollment once, newest first, no token after the last.
    let walk = |filter: ListEnrollmentsRequest, page_size: i32| {
        let bench = &bench;
        async move {
            let mut seen = Vec::new();
            let mut pages = Vec::new();
            let mut token = String::new();
            loop {
                anyhow::ensure!(pages.len() < 10, "the listing does not end");
                let (page, next) = list_enrollments(
                    bench,
                    ListEnrollmentsRequest {
                        page_size,
                        page_token: token.clone(),
                        ..filter.clone()
                    },
                )
                .await?;
                pages.push(page.len());
                seen.extend(page.into_iter().map(|enrollment| enrollment.enrollment_id));
                if next.is_empty() {
                    return Ok::<_, anyhow::Error>((seen, pages));
                }
                token = next;
            }
        }
    };
    let all = ListEnrollmentsRequest::default();
    assert_eq!(
        walk(all.clone(), 1).await?,
        (newest_first.clone(), vec![1, 1, 1, 1])
    );
    assert_eq!(
        walk(all.clone(), 3).await?,
        (newest_first.clone(), vec![3, 1])
    );
    assert_eq!(walk(all.clone(), 0).await?, (newest_first.clone(), vec![4]));
    let of_ada = ListEnrollmentsRequest {
        contact_id: ada.contact_id.clone(),
        ..ListEnrollmentsRequest::default()
    };
    assert_eq!(
        walk(of_ada.clone(), 1).await?,
        (
            vec![newest_first[0].clone(), newest_first[3].clone()],
            vec![1, 1]
        )
    );
    let of_b1 = ListEnrollmentsRequest {
        track_id: library.track_id.clone(),
        state: EnrollmentState::Active.into(),
        ..ListEnrollmentsRequest::default()
    };
    assert_eq!(
        walk(of_b1, 2).await?,
        (newest_first[1..].to_vec(), vec![2, 1])
    );

    // A token of ada's listing is no token of bo's, nor is a made-up one.
    let (_, ada_token) = list_enrollments(
        &bench,
        ListEnrollmentsRequest {
            page_size: 1,
            ..of_ada.clone()
        },
    )
    .await?;
    assert!(!ada_token.is_empty());
    assert_eq!(
        violated_fields(
            list_enrollments(
                &bench,
                ListEnrollmentsRequest {
                    contact_id: bo.contact_id.clone(),
                    page_size: 1,
                    page_token: ada_token.clone(),
                    ..ListEnrollmentsRequest::default()
                }
            )
            .await
        ),
        ["page_token"]
    );
    assert_eq!(
        violated_fields(
            list_enrollments(
                &bench,
                ListEnrollmentsRequest {
                    page_token: "page-2".to_owned(),
                    ..ListEnrollmentsRequest::default()
                }
            )
            .await
        ),
        ["page_token"]
    );
    assert_eq!(
        violated_fields(
            list_enrollments(
                &bench,
                ListEnrollmentsRequest {
                    page_size: -1,
                    ..ListEnrollmentsRequest::default()
                }
            )
            .await
        ),
        ["page_size"]
    );

    // Three tries for each contact of the B1 track: the first at once, then a reaction
    // window apart.
    let first_run = bench.clock.now();
    assert_eq!(bench.run_due().await?, sent(3));
    bench.clock.set(first_run + Duration::days(7));
    assert_eq!(bench.run_due().await?, sent(3));
    bench.clock.set(first_run + Duration::days(14));
    assert_eq!(bench.run_due().await?, sent(3));
    let bo_enrollment = bench.enrollment_of(&bo).await?;
    let bo_sends = bench.get(&bo_enrollment.enrollment_id).await?.sends;
    assert_eq!(bo_sends.len(), 3);
    let bo_newest_first: Vec<String> = bo_sends
        .iter()
        .rev()
        .map(|send| send.send_id.clone())
        .collect();

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut first_token = String::new();
    for page in 0.. {
        anyhow::ensure!(page < 10, "the listing does not end");
        let (sends, next) = list_sends(
            &bench,
            ListSendsRequest {
                contact_id: bo.contact_id.clone(),
                page_size: 1,
                page_token: token.clone(),
                ..ListSendsRequest::default()
            },
        )
        .await?;
        assert_eq!(sends.len(), 1, "page {page}");
        assert!(sends.iter().all(|send| send.contact_id == bo.contact_id
            && send.enrollment_id == bo_enrollment.enrollment_id));
        seen.extend(sends.into_iter().map(|send| send.send_id));
        if next.is_empty() {
            break;
        }
        if first_token.is_empty() {
            first_token = next.clone();
        }
        token = next;
    }
    assert_eq!(seen, bo_newest_first, "every send once, newest first");
    let (of_enrollment, _) = list_sends(
        &bench,
        ListSendsRequest {
            contact_id: bo.contact_id.clone(),
            enrollment_id: bo_enrollment.enrollment_id.clone(),
            ..ListSendsRequest::default()
        },
    )
    .await?;
    assert_eq!(
        of_enrollment,
        bo_sends.iter().rev().cloned().collect::<Vec<_>>()
    );

    // Filtered by due time: bo's first mail was due at its enrollment and sent two minutes
    // later; the others were due when they went; the end of a range is outside it.
    let enrolled = t0 + Duration::minutes(1);
    assert_eq!(time_of(bo_sends[0].due_time.as_ref()), Some(enrolled));
    assert_eq!(time_of(bo_sends[0].send_time.as_ref()), Some(first_run));
    let second_due = first_run + Duration::days(7);
    assert_eq!(time_of(bo_sends[1].due_time.as_ref()), Some(second_due));
    assert_eq!(
        sends_due(
            &bench,
            &bo,
            Some(enrolled),
            Some(enrolled + Duration::seconds(1))
        )
        .await?,
        [bo_newest_first[2].clone()]
    );
    assert_eq!(
        sends_due(
            &bench,
            &bo,
            Some(enrolled + Duration::minutes(1)),
            Some(second_due)
        )
        .await?,
        Vec::<String>::new(),
        "the first send went within the range but was due before it"
    );
    assert_eq!(
        sends_due(
            &bench,
            &bo,
            Some(enrolled + Duration::minutes(1)),
            Some(second_due + Duration::seconds(1))
        )
        .await?,
        [bo_newest_first[1].clone()]
    );
    assert_eq!(
        sends_due(&bench, &bo, Some(second_due), None).await?,
        bo_newest_first[..2].to_vec()
    );
    assert_eq!(
        sends_due(&bench, &bo, None, Some(second_due)).await?,
        bo_newest_first[2..].to_vec()
    );

    // Refusals.
    assert_eq!(
        violated_fields(
            list_sends(
                &bench,
                ListSendsRequest {
                    contact_id: ada.contact_id.clone(),
                    page_token: first_token.clone(),
                    ..ListSendsRequest::default()
                }
            )
            .await
        ),
        ["page_token"],
        "a token of bo's sends is no token of ada's"
    );
    let fields = violated_fields(
        list_sends(
            &bench,
            ListSendsRequest {
                contact_id: bo.contact_id.clone(),
                time_range: range(Some(second_due), Some(enrolled)),
                ..ListSendsRequest::default()
            },
        )
        .await,
    );
    assert!(
        fields.len() == 1 && fields[0].starts_with("time_range"),
        "{fields:?}"
    );
    assert_eq!(
        violated_fields(
            list_sends(
                &bench,
                ListSendsRequest {
                    contact_id: bo.contact_id.clone(),
                    page_size: -5,
                    ..ListSendsRequest::default()
                }
            )
            .await
        ),
        ["page_size"]
    );
    assert_eq!(
        violated_fields(list_sends(&bench, ListSendsRequest::default()).await),
        ["contact_id"]
    );
    refused(
        list_sends(
            &bench,
            ListSendsRequest {
                contact_id: Uuid::now_v7().to_string(),
                ..ListSendsRequest::default()
            },
        )
        .await,
        Code::NotFound,
    );
    Ok(())
}

async fn the_frequency_cap_counts_sends_follows_overrides_and_defers_mail(
    bench: Bench,
) -> anyhow::Result<()> {
    bench.library().await?;
    let defaults = FrequencyCap {
        policy: Some(FrequencyPolicy {
            max_sends: 4,
            window: days(30),
            min_gap: days(2),
            update_time: None,
        }),
        ..FrequencyCap::default()
    };
    assert_eq!(frequency_cap(&bench, "").await?, defaults);

    let policy = |max_sends: u32, window: i64, min_gap: i64| FrequencyPolicy {
        max_sends,
        window: days(window),
        min_gap: days(min_gap),
        update_time: None,
    };
    for (contact_id, given, fields) in [
        ("", None, vec!["policy"]),
        ("", Some(policy(0, 30, 2)), vec!["policy.max_sends"]),
        ("", Some(policy(3, 0, 2)), vec!["policy.window"]),
        ("", Some(policy(3, -1, 2)), vec!["policy.window"]),
        ("", Some(policy(3, 30, 0)), vec!["policy.min_gap"]),
        (
            "",
            Some(policy(0, -1, 2)),
            vec!["policy.max_sends", "policy.window"],
        ),
    ] {
        assert_eq!(
            violated_fields(set_policy(&bench, contact_id, given, &key()).await),
            fields,
            "{given:?}"
        );
    }
    assert_eq!(
        violated_fields(set_policy(&bench, "", Some(policy(3, 20, 1)), "").await),
        ["idempotency_key"]
    );
    let stranger = Uuid::now_v7().to_string();
    refused(
        set_policy(&bench, &stranger, Some(policy(1, 30, 2)), &key()).await,
        Code::NotFound,
    );
    refused(frequency_cap(&bench, &stranger).await, Code::NotFound);
    assert_eq!(
        frequency_cap(&bench, "").await?,
        defaults,
        "nothing was set"
    );

    // A global policy: three mails in 20 days, a day apart.
    let t0 = bench.clock.now();
    let global = FrequencyPolicy {
        update_time: at(t0),
        ..policy(3, 20, 1)
    };
    let global_key = key();
    let global_cap = FrequencyCap {
        policy: Some(global),
        ..FrequencyCap::default()
    };
    assert_eq!(
        set_policy(&bench, "", Some(policy(3, 20, 1)), &global_key).await?,
        global_cap
    );
    assert_eq!(frequency_cap(&bench, "").await?, global_cap);
    assert_eq!(
        set_policy(&bench, "", Some(policy(3, 20, 1)), &global_key).await?,
        global_cap,
        "a retry"
    );
    refused(
        set_policy(&bench, "", Some(policy(2, 20, 1)), &global_key).await,
        Code::AlreadyExists,
    );

    let ada = bench.capture("ada", ConsentState::Confirmed).await?;
    assert_eq!(
        frequency_cap(&bench, &ada.contact_id).await?,
        FrequencyCap {
            contact_id: ada.contact_id.clone(),
            policy: Some(global),
            ..FrequencyCap::default()
        }
    );
    assert_eq!(bench.run_due().await?, sent(1));
    bench.clock.advance(Duration::hours(1));
    assert_eq!(
        frequency_cap(&bench, &ada.contact_id).await?,
        FrequencyCap {
            contact_id: ada.contact_id.clone(),
            policy: Some(global),
            overridden: false,
            sends_in_window: 1,
            last_send_time: at(t0),
            next_allowed_time: at(t0 + Duration::days(1)),
        }
    );

    // Ada's own policy: one mail in 30 days.
    let overridden_at = bench.clock.now();
    let own = FrequencyPolicy {
        update_time: at(overridden_at),
        ..policy(1, 30, 2)
    };
    let override_cap = FrequencyCap {
        contact_id: ada.contact_id.clone(),
        policy: Some(own),
        overridden: true,
        sends_in_window: 1,
        last_send_time: at(t0),
        next_allowed_time: at(t0 + Duration::days(30)),
    };
    assert_eq!(
        set_policy(&bench, &ada.contact_id, Some(policy(1, 30, 2)), &key()).await?,
        override_cap
    );
    assert_eq!(frequency_cap(&bench, &ada.contact_id).await?, override_cap);
    assert_eq!(
        frequency_cap(&bench, "").await?,
        global_cap,
        "the global policy stays"
    );

    // The alternative offer falls due after the reaction window, and waits for the cap.
    bench.clock.set(t0 + Duration::days(7));
    assert_eq!(
        bench.run_due().await?,
        SchedulerReport {
            deferred: 1,
            ..SchedulerReport::default()
        }
    );
    let enrollment = bench.enrollment_of(&ada).await?;
    assert_eq!(enrollment.state(), EnrollmentState::Active);
    assert_eq!(
        time_of(enrollment.next_due_time.as_ref()),
        Some(t0 + Duration::days(30))
    );
    bench
        .nothing_happens_until(
            t0 + Duration::days(30) - Duration::seconds(1),
            Duration::days(5),
        )
        .await?;
    assert_eq!(bench.received_by(&ada)?.len(), 1);
    bench.clock.set(t0 + Duration::days(30));
    assert_eq!(bench.run_due().await?, sent(1));
    let record = bench.get(&enrollment.enrollment_id).await?;
    assert_eq!(record.sends.len(), 2);
    assert_eq!((record.sends[1].step, record.sends[1].attempt), (1, 2));
    assert_eq!(
        time_of(record.sends[1].send_time.as_ref()),
        Some(t0 + Duration::days(30))
    );
    assert_eq!(
        frequency_cap(&bench, &ada.contact_id).await?,
        FrequencyCap {
            sends_in_window: 1,
            last_send_time: at(t0 + Duration::days(30)),
            next_allowed_time: at(t0 + Duration::days(60)),
            ..override_cap.clone()
        },
        "the first mail left the window as the second went"
    );

    // Without its override, ada is under the global policy again.
    let removed = set_policy(&bench, &ada.contact_id, None, &key()).await?;
    assert_eq!(
        removed,
        FrequencyCap {
            contact_id: ada.contact_id.clone(),
            policy: Some(global),
            overridden: false,
            sends_in_window: 1,
            last_send_time: at(t0 + Duration::days(30)),
            next_allowed_time: at(t0 + Duration::days(31)),
        }
    );
    assert_eq!(frequency_cap(&bench, &ada.contact_id).await?, removed);
    Ok(())
}

async fn quiet_hours_in_the_tracks_time_zone_hold_a_mail_until_morning(
    bench: Bench,
) -> anyhow::Result<()> {
    let library = bench.library().await?;
    let version = publish(
        &bench,
        &library,
        TrackVersion {
            auto_enroll_classes: vec![LeadClass::B1.into()],
            quiet_hours: Some(QuietHours {
                start_minute: 20 * 60,
                end_minute: 8 * 60,
                skip_weekends: false,
            }),
            time_zone_mode: TimeZoneMode::Track.into(),
            default_time_zone: "Europe/Berlin".to_owned(),
            ..TrackVersion::default()
        },
    )
    .await?;
    // Monday, 22:00 in Berlin; 16:00 in New York, where the contact lives.
    let evening = utc(2026, 1, 5, 21, 0, 0);
    bench.clock.set(evening);
    let ada = capture_in_zone(&bench, "ada", "America/New_York").await?;
    let enrollment = bench.enrollment_of(&ada).await?;
    assert_eq!(enrollment.track_version, version);

    assert_eq!(
        bench.run_due().await?,
        SchedulerReport {
            deferred: 1,
            ..SchedulerReport::default()
        },
        "22:00 in the track's zone is quiet"
    );
    // Tuesday, 08:00 in Berlin.
    let morning = utc(2026, 1, 6, 7, 0, 0);
    assert_eq!(
        time_of(
            get_state(&bench, &enrollment.enrollment_id)
                .await?
                .next_due_time
                .as_ref()
        ),
        Some(morning)
    );
    bench
        .nothing_happens_until(morning - Duration::seconds(1), Duration::hours(1))
        .await?;
    assert!(bench.received()?.is_empty(), "nothing in the night");
    bench.clock.set(morning);
    assert_eq!(bench.run_due().await?, sent(1));
    assert_eq!(bench.received_by(&ada)?.len(), 1);
    let send = only_send(&bench, &ada).await?;
    assert_eq!(time_of(send.send_time.as_ref()), Some(morning));
    Ok(())
}

async fn a_contact_whose_cell_ran_dry_is_flagged_until_new_content_arrives(
    bench: Bench,
) -> anyhow::Result<()> {
    let library = bench.library().await?;
    // The CFO's B1 cell holds one item.
    let carla = bench
        .capture_into(
            &Uuid::now_v7().to_string(),
            "carla",
            "cfo",
            ConsentState::Confirmed,
        )
        .await?;
    let enrollment_id = bench.enrollment_of(&carla).await?.enrollment_id;
    assert_eq!(bench.run_due().await?, sent(1));
    let first = only_send(&bench, &carla).await?;
    assert_eq!(first.content_item_id, library.cfo_b1.content_item_id);
    bench.clock.advance(Duration::hours(1));
    let reacted_at = bench.clock.now();
    react(&bench, &carla, &first.send_id, ActivityType::LinkClicked).await?;

    // The next step finds nothing left in the cell.
    bench.clock.set(reacted_at + Duration::days(21));
    assert_eq!(
        bench.run_due().await?,
        SchedulerReport {
            flagged: 1,
            ..SchedulerReport::default()
        }
    );
    let flagged = get_state(&bench, &enrollment_id).await?;
    assert_eq!(flagged.state(), EnrollmentState::Flagged);
    assert!(
        flagged.state_reason.contains("no content"),
        "{:?}",
        flagged.state_reason
    );
    assert_eq!(flagged.next_due_time, None);
    assert_eq!(flagged.end_time, None, "flagged is open");
    assert_eq!(bench.received_by(&carla)?.len(), 1, "nothing repeated");

    let flagged_cells = || async {
        let grid = bench
            .api
            .get_content_grid(Request::new(GetContentGridRequest {
                product: PRODUCT.to_owned(),
                ..GetContentGridRequest::default()
            }))
            .await?
            .into_inner();
        let cfo_b1 = grid
            .cells
            .iter()
            .find(|cell| cell.buyer_role == "cfo" && cell.stage() == BuyingStage::ProblemAwareness)
            .map(|cell| (cell.item_count, cell.flagged_enrollment_count));
        let elsewhere: u32 = grid
            .cells
            .iter()
            .filter(|cell| {
                !(cell.buyer_role == "cfo" && cell.stage() == BuyingStage::ProblemAwareness)
            })
            .map(|cell| cell.flagged_enrollment_count)
            .sum();
        Ok::<_, anyhow::Error>((cfo_b1, elsewhere))
    };
    assert_eq!(flagged_cells().await?, (Some((1, 1)), 0));

    // Nothing wakes it: not time, not items of other cells.
    bench.clock.advance(Duration::days(1));
    assert_eq!(bench.run_due().await?, no_report());
    let item = |title: &str, slug: &str, role: &str, stage: BuyingStage| ContentItem {
        title: title.to_owned(),
        kind: ContentKind::CaseStudy.into(),
        url: format!("https://www.example.com/content/{slug}"),
        buyer_roles: vec![role.to_owned()],
        stage: stage.into(),
        product: PRODUCT.to_owned(),
        language: "en".to_owned(),
        ..ContentItem::default()
    };
    bench
        .create_item(item(
            "How IT teams cut ERP downtime",
            "it-downtime",
            IT_MANAGER,
            BuyingStage::ProblemAwareness,
        ))
        .await?;
    bench
        .create_item(item(
            "Costing an ERP rollout",
            "cfo-rollout-cost",
            "cfo",
            BuyingStage::SolutionSearch,
        ))
        .await?;
    assert_eq!(
        get_state(&bench, &enrollment_id).await?.state(),
        EnrollmentState::Flagged
    );
    assert_eq!(bench.run_due().await?, no_report());

    // A new item of its cell takes it up again.
    let woken_at = bench.clock.now();
    let new_item = bench
        .create_item(item(
            "A CFO's guide to planning budgets",
            "cfo-budgets",
            "cfo",
            BuyingStage::ProblemAwareness,
        ))
        .await?;
    let woken = get_state(&bench, &enrollment_id).await?;
    assert_eq!(woken.state(), EnrollmentState::Active);
    assert_eq!(woken.state_reason, "new content in its cell");
    assert_eq!(time_of(woken.next_due_time.as_ref()), Some(woken_at));
    assert_eq!(flagged_cells().await?, (Some((2, 0)), 0));
    assert_eq!(bench.run_due().await?, sent(1));
    let record = bench.get(&enrollment_id).await?;
    assert_eq!(record.sends.len(), 2);
    assert_eq!(record.sends[1].content_item_id, new_item.content_item_id);
    assert_eq!((record.sends[1].step, record.sends[1].attempt), (2, 1));
    let mails = bench.received_by(&carla)?;
    assert_eq!(mails.len(), 2);
    assert_eq!(mails[1].item_url, new_item.url);
    assert_eq!(mails[1].send_id, record.sends[1].send_id);
    Ok(())
}

fn stats(sent_count: u32, opened_count: u32, clicked_count: u32) -> Option<NurtureStats> {
    let rate = |count: u32| {
        if sent_count == 0 {
            0.0
        } else {
            f64::from(count) / f64::from(sent_count)
        }
    };
    Some(NurtureStats {
        sent_count,
        opened_count,
        clicked_count,
        open_rate: rate(opened_count),
        click_rate: rate(clicked_count),
    })
}

fn duration(value: Duration) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: value.num_seconds(),
        nanos: 0,
    })
}

async fn the_nurture_report_counts_mails_reactions_and_outcomes_exactly(
    bench: Bench,
) -> anyhow::Result<()> {
    let library = bench.library().await?;
    let webinar_track = manual_track(&bench, &library, "ERP A webinar follow-up").await?;
    let t0 = bench.clock.now();
    let mut contacts = Vec::new();
    for name in ["ada", "bo", "cleo", "dev", "eve"] {
        contacts.push(bench.capture(name, ConsentState::Confirmed).await?);
    }
    let [ada, bo, cleo, dev, eve] = &contacts[..] else {
        anyhow::bail!("five contacts");
    };
    assert_eq!(bench.run_due().await?, sent(5));

    // Ada opens her mail, bo clicks his; cleo is stopped.
    bench.clock.advance(Duration::hours(1));
    react(
        &bench,
        ada,
        &only_send(&bench, ada).await?.send_id,
        ActivityType::EmailOpened,
    )
    .await?;
    react(
        &bench,
        bo,
        &only_send(&bench, bo).await?.send_id,
        ActivityType::LinkClicked,
    )
    .await?;
    bench.clock.advance(Duration::hours(1));
    let cleo_id = bench.enrollment_of(cleo).await?.enrollment_id;
    stop(&bench, &cleo_id, "", &key()).await?;
    // Ada joins the webinar track too, her first mail there long after the report.
    enroll(
        &bench,
        enroll_request(ada, &webinar_track, Some(t0 + Duration::days(90))),
    )
    .await?;
    // Dev and eve get their alternative offers; eve is stopped, dev exhausted.
    bench.clock.set(t0 + Duration::days(7));
    assert_eq!(bench.run_due().await?, sent(2));
    bench.clock.set(t0 + Duration::days(10));
    let eve_id = bench.enrollment_of(eve).await?.enrollment_id;
    stop(&bench, &eve_id, "", &key()).await?;
    bench.clock.set(t0 + Duration::days(14));
    assert_eq!(bench.run_due().await?, sent(1));
    bench.clock.set(t0 + Duration::days(21));
    assert_eq!(
        bench.run_due().await?,
        SchedulerReport {
            exhausted: 1,
            ..SchedulerReport::default()
        }
    );
    assert_eq!(
        bench.enrollment_of(dev).await?.state(),
        EnrollmentState::Exhausted
    );
    bench.clock.advance(Duration::minutes(1));

    let item_stats = |item: &ContentItem, stats: Option<NurtureStats>| ContentItemStats {
        content_item_id: item.content_item_id.clone(),
        title: item.title.clone(),
        kind: ContentKind::Whitepaper.into(),
        stats,
    };
    let cell = |stats: Option<NurtureStats>| CellStats {
        buyer_role: IT_MANAGER.to_owned(),
        stage: BuyingStage::ProblemAwareness.into(),
        stats,
    };
    let b1_track = |stats: Option<NurtureStats>| TrackStats {
        track_id: library.track_id.clone(),
        name: "ERP B1 nurture".to_owned(),
        stats,
        ..TrackStats::default()
    };
    let webinar = TrackStats {
        track_id: webinar_track.clone(),
        name: "ERP A webinar follow-up".to_owned(),
        stats: stats(0, 0, 0),
        open_count: 1,
        ..TrackStats::default()
    };

    // From the start until now.
    let whole = report(
        &bench,
        GetNurtureReportRequest {
            time_range: range(Some(t0), None),
            ..GetNurtureReportRequest::default()
        },
    )
    .await?;
    // Ended: cleo after 2 hours, eve after 10 days, dev after 21 days.
    let mean = (Duration::hours(2) + Duration::days(10) + Duration::days(21)) / 3;
    assert_eq!(
        mean,
        Duration::days(10) + Duration::hours(8) + Duration::minutes(40)
    );
    assert_eq!(
        whole,
        GetNurtureReportResponse {
            totals: stats(8, 1, 1),
            items: vec![
                item_stats(&library.it_b1[0], stats(5, 1, 1)),
                item_stats(&library.it_b1[1], stats(2, 0, 0)),
                item_stats(&library.it_b1[2], stats(1, 0, 0)),
            ],
            cells: vec![cell(stats(8, 1, 1))],
            tracks: vec![
                TrackStats {
                    enrolled_count: 1,
                    ..webinar.clone()
                },
                TrackStats {
                    enrolled_count: 5,
                    open_count: 2,
                    exhausted_count: 1,
                    handed_over_count: 0,
                    stopped_count: 2,
                    flagged_count: 0,
                    mean_time_in_track: duration(mean),
                    median_time_in_track: duration(Duration::days(10)),
                    ..b1_track(stats(8, 1, 1))
                },
            ],
        }
    );
    assert_eq!(whole.totals.map(|totals| totals.open_rate), Some(0.125));

    // Only the B1 track: the same but for the webinar track.
    let b1_only = report(
        &bench,
        GetNurtureReportRequest {
            time_range: range(Some(t0), None),
            track_id: library.track_id.clone(),
            ..GetNurtureReportRequest::default()
        },
    )
    .await?;
    assert_eq!(
        b1_only,
        GetNurtureReportResponse {
            tracks: whole.tracks[1..].to_vec(),
            ..whole.clone()
        }
    );

    // From the second day to the twelfth: the two alternative offers of day 7 and eve's
    // stop; nobody was enrolled, ada, bo and dev were still in the track at its end.
    let middle = report(
        &bench,
        GetNurtureReportRequest {
            time_range: range(Some(t0 + Duration::days(1)), Some(t0 + Duration::days(12))),
            ..GetNurtureReportRequest::default()
        },
    )
    .await?;
    assert_eq!(
        middle,
        GetNurtureReportResponse {
            totals: stats(2, 0, 0),
            items: vec![item_stats(&library.it_b1[1], stats(2, 0, 0))],
            cells: vec![cell(stats(2, 0, 0))],
            tracks: vec![
                webinar.clone(),
                TrackStats {
                    open_count: 3,
                    stopped_count: 1,
                    mean_time_in_track: duration(Duration::days(10)),
                    median_time_in_track: duration(Duration::days(10)),
                    ..b1_track(stats(2, 0, 0))
                },
            ],
        }
    );

    // Another product has nothing.
    let crm = report(
        &bench,
        GetNurtureReportRequest {
            time_range: range(Some(t0), None),
            product: "crm".to_owned(),
            ..GetNurtureReportRequest::default()
        },
    )
    .await?;
    assert_eq!(
        crm,
        GetNurtureReportResponse {
            totals: stats(0, 0, 0),
            ..GetNurtureReportResponse::default()
        }
    );

    // Refusals.
    refused(
        report(
            &bench,
            GetNurtureReportRequest {
                time_range: range(Some(t0), None),
                track_id: Uuid::now_v7().to_string(),
                ..GetNurtureReportRequest::default()
            },
        )
        .await,
        Code::NotFound,
    );
    assert_eq!(
        violated_fields(report(&bench, GetNurtureReportRequest::default()).await),
        ["time_range.start_time"]
    );
    assert_eq!(
        violated_fields(
            report(
                &bench,
                GetNurtureReportRequest {
                    time_range: range(None, Some(t0)),
                    ..GetNurtureReportRequest::default()
                }
            )
            .await
        ),
        ["time_range.start_time"]
    );
    let fields = violated_fields(
        report(
            &bench,
            GetNurtureReportRequest {
                time_range: range(Some(t0 + Duration::days(1)), Some(t0)),
                ..GetNurtureReportRequest::default()
            },
        )
        .await,
    );
    assert!(
        fields.len() == 1 && fields[0].starts_with("time_range"),
        "{fields:?}"
    );
    Ok(())
}

on_both_stores!(
    pause_resume_and_stop_change_an_enrollment_by_hand,
    enroll_contact_checks_its_request_and_a_later_start_holds_the_first_mail,
    enrollments_and_sends_page_newest_first,
    the_frequency_cap_counts_sends_follows_overrides_and_defers_mail,
    quiet_hours_in_the_tracks_time_zone_hold_a_mail_until_morning,
    a_contact_whose_cell_ran_dry_is_flagged_until_new_content_arrives,
    the_nurture_report_counts_mails_reactions_and_outcomes_exactly,
);
