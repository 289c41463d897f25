//! Capture's API beyond the way in: form posts and CORS at the HTTP ingress, tracked clicks
//! and the open pixel, the unsubscribe link, the streamed import, form updates, resolving
//! the fields to ask, progressive profiling through repeated submissions, and visitor merges.

use chrono::{Duration, Utc};
use leadflow_capture::links::{LinkClaims, LinkSigner};
use leadflow_proto::{
    capture::v1::{
        Activity, ActivityInput, Contact, CreateFormRequest, Form, FormState, GetConsentRequest,
        GetConsentResponse, GetContactRequest, GetLeadRequest, ImportLeadsRequest,
        ImportLeadsResponse, ImportedConsent, ItemStatus, ListActivitiesRequest,
        MergeVisitorRequest, RecordOutcome, ResolveFormFieldsRequest, SubmitFormRequest,
        SubmitFormResponse, TrackActivityRequest, UpdateFormRequest, activity_input,
        get_consent_request, get_contact_request, list_activities_request, merge_visitor_request,
        resolve_form_fields_request,
    },
    common::v1::{ActivityType, ContactProfile, LeadProfile},
    events::v1::{ConsentChannel, ConsentState, event_envelope::Payload},
};
use leadflow_tests::{HttpResponse, TEST_LINK_KEY, TestSuite};
use tonic::{Code, Status};
use tonic_types::StatusExt;
use uuid::Uuid;

use crate::intake::{CaptureRecords, submission, trade_fair_form};

const ALLOWED_ORIGIN: &str = "https://www.example.com";
const FOREIGN_ORIGIN: &str = "https://evil.example";

async fn create_form(suite: &TestSuite, form: Form) -> anyhow::Result<Form> {
    Ok(suite
        .capture()
        .create_form(CreateFormRequest {
            form: Some(form),
            idempotency_key: Uuid::now_v7().to_string(),
        })
        .await?
        .into_inner()
        .form
        .expect("form"))
}

/// The trade fair form without double opt-in: consent given on it is confirmed at once.
fn single_opt_in_form() -> Form {
    Form {
        double_opt_in: false,
        ..trade_fair_form()
    }
}

async fn submit(
    suite: &TestSuite,
    request: SubmitFormRequest,
) -> anyhow::Result<SubmitFormResponse> {
    Ok(suite.capture().submit_form(request).await?.into_inner())
}

/// A contact of Example AG captured on `form` with consent given.
async fn captured_contact(suite: &TestSuite, form: &Form, email: &str) -> anyhow::Result<Uuid> {
    let submitted = submit(
        suite,
        submission(
            &form.form_id,
            email,
            &[
                ("email", email),
                ("first_name", "Ada"),
                ("company", "Example AG"),
            ],
        ),
    )
    .await?;
    Ok(Uuid::parse_str(&submitted.contact_id)?)
}

async fn contact_by_email(suite: &TestSuite, email: &str) -> Result<Contact, Status> {
    Ok(suite
        .capture()
        .get_contact(GetContactRequest {
            lookup: Some(get_contact_request::Lookup::Email(email.to_owned())),
        })
        .await?
        .into_inner()
        .contact
        .expect("contact"))
}

async fn consent_of(suite: &TestSuite, contact_id: &str) -> anyhow::Result<GetConsentResponse> {
    Ok(suite
        .capture()
        .get_consent(GetConsentRequest {
            contact: Some(get_consent_request::Contact::ContactId(
                contact_id.to_owned(),
            )),
            purpose: String::new(),
        })
        .await?
        .into_inner())
}

/// The current state of the contact's only purpose and the channel of its latest record.
async fn consent_now(
    suite: &TestSuite,
    contact_id: &str,
) -> anyhow::Result<(ConsentState, ConsentChannel)> {
    let consent = consent_of(suite, contact_id).await?;
    assert_eq!(consent.current.len(), 1, "one purpose: {consent:?}");
    let latest = consent.history.last().expect("a consent record");
    Ok((consent.current[0].state(), latest.channel()))
}

/// The activities of a contact, of one type when `only` is given.
async fn activities_of(
    suite: &TestSuite,
    contact_id: &str,
    only: Option<ActivityType>,
) -> anyhow::Result<Vec<Activity>> {
    Ok(suite
        .capture()
        .list_activities(ListActivitiesRequest {
            subject: Some(list_activities_request::Subject::ContactId(
                contact_id.to_owned(),
            )),
            types: only.into_iter().map(i32::from).collect(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .activities)
}

fn signer() -> LinkSigner {
    LinkSigner::new(TEST_LINK_KEY.as_bytes(), &[]).expect("a long enough key")
}

fn in_30_days() -> chrono::DateTime<Utc> {
    Utc::now() + Duration::days(30)
}

/// The three dot-separated parts of a link token: version, payload, tag.
fn token_parts(token: &str) -> (&str, &str, &str) {
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(version), Some(payload), Some(tag)) => (version, payload, tag),
        _ => panic!("not a dotted token: {token}"),
    }
}

/// `token` with the first character of its tag replaced: same claims, wrong signature.
fn with_altered_tag(token: &str) -> String {
    let (version, payload, tag) = token_parts(token);
    let replacement = if tag.starts_with('A') { 'B' } else { 'A' };
    format!("{version}.{payload}.{replacement}{}", &tag[1..])
}

/// The payload of `other` under the tag of `token`: altered claims, the old signature.
fn with_payload_of(token: &str, other: &str) -> String {
    let (version, _, tag) = token_parts(token);
    let (_, payload, _) = token_parts(other);
    format!("{version}.{payload}.{tag}")
}

async fn get(suite: &TestSuite, path: &str) -> anyhow::Result<HttpResponse> {
    suite.http("GET", path, &[], b"").await
}

fn json_of(response: &HttpResponse) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::from_slice(&response.body)?)
}

/// The `action` of the first HTML form on a page.
fn form_action(page: &str) -> Option<&str> {
    let start = page.find("action=\"")? + "action=\"".len();
    let length = page[start..].find('"')?;
    Some(&page[start..start + length])
}

#[tokio::test]
async fn form_posts_answer_by_content_type_and_only_allowed_origins_may_post() -> anyhow::Result<()>
{
    let suite = TestSuite::start().await?;
    let records = CaptureRecords::open(&suite, None).await?;
    let form = create_form(&suite, trade_fair_form()).await?;
    let path = format!("/v1/forms/{}/submissions", form.form_id);
    let json = ("content-type", "application/json");

    let preflight = suite
        .http("OPTIONS", &path, &[("origin", ALLOWED_ORIGIN)], b"")
        .await?;
    assert_eq!(preflight.status, 204, "{}", preflight.text());
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some(ALLOWED_ORIGIN)
    );
    let foreign_preflight = suite
        .http("OPTIONS", &path, &[("origin", FOREIGN_ORIGIN)], b"")
        .await?;
    assert_eq!(foreign_preflight.status, 403);
    assert_eq!(
        foreign_preflight.header("access-control-allow-origin"),
        None
    );

    let grace = br#"{"email":"grace@example.com","first_name":"Grace","company":"Example AG","consent_given":true}"#;
    let foreign_post = suite
        .http("POST", &path, &[("origin", FOREIGN_ORIGIN), json], grace)
        .await?;
    assert_eq!(foreign_post.status, 403, "{}", foreign_post.text());
    let unknown = contact_by_email(&suite, "grace@example.com")
        .await
        .expect_err("a foreign origin writes nothing");
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(records.events().await?.is_empty(), "nothing was published");

    let malformed = suite
        .http(
            "POST",
            &path,
            &[("origin", ALLOWED_ORIGIN), json],
            br#"{"email":"not-an-email","first_name":"Grace","company":"Example AG"}"#,
        )
        .await?;
    assert_eq!(malformed.status, 422, "{}", malformed.text());
    let problem = json_of(&malformed)?;
    let fields: Vec<&str> = problem["fields"]
        .as_array()
        .expect("a fields array")
        .iter()
        .filter_map(|violation| violation["field"].as_str())
        .collect();
    assert_eq!(fields, ["values[\"email\"]"], "{problem}");
    let not_json = suite.http("POST", &path, &[json], b"{\"email\":").await?;
    assert_eq!(not_json.status, 422, "{}", not_json.text());

    let accepted = suite
        .http("POST", &path, &[("origin", ALLOWED_ORIGIN), json], grace)
        .await?;
    assert_eq!(accepted.status, 200, "{}", accepted.text());
    assert_eq!(
        accepted.header("access-control-allow-origin"),
        Some(ALLOWED_ORIGIN)
    );
    let answer = json_of(&accepted)?;
    assert_eq!(answer["status"], "accepted", "{answer}");
    assert_eq!(answer["consent_state"], "CONSENT_STATE_GRANTED");
    assert!(contact_by_email(&suite, "grace@example.com").await.is_ok());

    let thanks = "https://www.example.com/thanks?from=erp";
    let redirecting = create_form(
        &suite,
        Form {
            success_url: thanks.to_owned(),
            ..trade_fair_form()
        },
    )
    .await?;
    let posted = suite
        .http(
            "POST",
            &format!("/v1/forms/{}/submissions", redirecting.form_id),
            &[
                ("origin", ALLOWED_ORIGIN),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            b"email=linus%40example.com&first_name=Linus&company=Example+AG&consent_given=on",
        )
        .await?;
    assert_eq!(posted.status, 303, "{}", posted.text());
    assert_eq!(posted.header("location"), Some(thanks));
    let linus = contact_by_email(&suite, "linus@example.com").await?;
    assert_eq!(linus.profile.expect("profile").first_name, "Linus");
    suite.stop().await
}

#[tokio::test]
async fn a_tracked_click_redirects_only_to_its_signed_url_and_counts_once() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let records = CaptureRecords::open(&suite, None).await?;
    let form = create_form(&suite, single_opt_in_form()).await?;
    let contact_id = captured_contact(&suite, &form, "ada@example.com").await?;
    let send_id = Uuid::now_v7();
    let target = "https://www.example.com/erp/pricing?utm_source=nurture&utm_medium=email";
    let token = signer().sign(&LinkClaims::click(
        contact_id,
        send_id,
        target,
        in_30_days(),
    )?);

    for path in [
        format!("/v1/t/click?token={token}"),
        format!("/v1/t/click?token={token}"),
        format!("/v1/t/click?token={token}&url=https%3A%2F%2Fevil.example%2F"),
    ] {
        let clicked = get(&suite, &path).await?;
        assert!(
            (300..400).contains(&clicked.status),
            "{path}: {}",
            clicked.status
        );
        assert_eq!(clicked.header("location"), Some(target), "{path}");
    }
    let clicks = activities_of(
        &suite,
        &contact_id.to_string(),
        Some(ActivityType::LinkClicked),
    )
    .await?;
    assert_eq!(clicks.len(), 1, "the same link followed again counts once");
    assert_eq!(clicks[0].send_id, send_id.to_string());
    assert_eq!(
        clicks[0].attributes.get("url").map(String::as_str),
        Some(target)
    );

    let elsewhere = signer().sign(&LinkClaims::click(
        contact_id,
        send_id,
        "https://evil.example/",
        in_30_days(),
    )?);
    let open_token = signer().sign(&LinkClaims::open(contact_id, send_id, in_30_days()));
    let expired = signer().sign(&LinkClaims::click(
        contact_id,
        send_id,
        target,
        Utc::now() - Duration::days(1),
    )?);
    for forged in [
        with_payload_of(&token, &elsewhere),
        with_altered_tag(&token),
        open_token,
        expired,
        "v1.bm9wZQ.bm9wZQ".to_owned(),
    ] {
        let refused = get(&suite, &format!("/v1/t/click?token={forged}")).await?;
        assert!(
            (400..500).contains(&refused.status),
            "{forged}: {}",
            refused.status
        );
        assert_eq!(refused.header("location"), None, "no redirect anywhere");
    }
    let clicks = activities_of(
        &suite,
        &contact_id.to_string(),
        Some(ActivityType::LinkClicked),
    )
    .await?;
    assert_eq!(clicks.len(), 1, "refused links record nothing");
    let published = records
        .events()
        .await?
        .into_iter()
        .filter(|event| {
            matches!(&event.payload, Some(Payload::ActivityRecorded(activity))
                if activity.r#type() == ActivityType::LinkClicked)
        })
        .count();
    assert_eq!(published, 1, "the click is published once");
    suite.stop().await
}

#[tokio::test]
async fn the_open_pixel_always_shows_and_counts_a_valid_token_once() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let form = create_form(&suite, single_opt_in_form()).await?;
    let contact_id = captured_contact(&suite, &form, "ada@example.com").await?;
    let send_id = Uuid::now_v7();
    let pixel = signer().sign(&LinkClaims::open(contact_id, send_id, in_30_days()));
    let other_send = signer().sign(&LinkClaims::open(contact_id, Uuid::now_v7(), in_30_days()));

    for token in [
        pixel.clone(),
        pixel.clone(),
        with_payload_of(&pixel, &other_send),
        with_altered_tag(&pixel),
        "garbage".to_owned(),
    ] {
        let opened = get(&suite, &format!("/v1/t/open?token={token}")).await?;
        assert_eq!(opened.status, 200, "{token}");
        assert_eq!(opened.header("content-type"), Some("image/gif"), "{token}");
        assert!(opened.body.starts_with(b"GIF89a"), "{token}");
    }
    let opens = activities_of(
        &suite,
        &contact_id.to_string(),
        Some(ActivityType::EmailOpened),
    )
    .await?;
    assert_eq!(opens.len(), 1, "loaded twice, counted once; bad tokens not");
    assert_eq!(opens[0].send_id, send_id.to_string());
    suite.stop().await
}

#[tokio::test]
async fn an_unsubscribe_link_shows_a_button_on_get_and_withdraws_on_post() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let records = CaptureRecords::open(&suite, None).await?;
    let form = create_form(&suite, single_opt_in_form()).await?;
    let ada = captured_contact(&suite, &form, "ada@example.com").await?;
    let grace = captured_contact(&suite, &form, "grace@example.com").await?;
    let unsubscribe = |contact_id: Uuid, send_id: Uuid| {
        let token = signer().sign(&LinkClaims::unsubscribe(
            contact_id,
            send_id,
            "",
            Utc::now() + Duration::days(365),
        ));
        format!("/v1/consent/unsubscribe?token={token}")
    };
    let ada_send = Uuid::now_v7();
    let ada_link = unsubscribe(ada, ada_send);

    let page = get(&suite, &ada_link).await?;
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(
        page.header("content-type")
            .is_some_and(|value| value.starts_with("text/html")),
        "{:?}",
        page.header("content-type")
    );
    let html = page.text();
    assert!(html.contains("<form method=\"post\""), "{html}");
    assert!(html.contains("<button"), "{html}");
    assert_eq!(form_action(&html), Some(ada_link.as_str()), "{html}");
    assert_eq!(
        consent_now(&suite, &ada.to_string()).await?,
        (ConsentState::Confirmed, ConsentChannel::Form),
        "following the link changes nothing"
    );

    // The page's button: a form post with an empty body.
    let pressed = suite
        .http(
            "POST",
            &ada_link,
            &[("content-type", "application/x-www-form-urlencoded")],
            b"",
        )
        .await?;
    assert_eq!(pressed.status, 200, "{}", pressed.text());
    assert_eq!(
        consent_now(&suite, &ada.to_string()).await?,
        (ConsentState::Withdrawn, ConsentChannel::UnsubscribeLink)
    );
    let ada_consent = consent_of(&suite, &ada.to_string()).await?;
    let withdrawal = ada_consent.history.last().expect("the withdrawal");
    assert_eq!(withdrawal.send_id, ada_send.to_string());
    assert_eq!(withdrawal.previous_state(), ConsentState::Confirmed);

    let one_click = suite
        .http(
            "POST",
            &unsubscribe(grace, Uuid::now_v7()),
            &[("content-type", "application/x-www-form-urlencoded")],
            b"List-Unsubscribe=One-Click",
        )
        .await?;
    assert_eq!(one_click.status, 200, "{}", one_click.text());
    assert_eq!(
        consent_now(&suite, &grace.to_string()).await?,
        (ConsentState::Withdrawn, ConsentChannel::ListUnsubscribe)
    );

    let mut withdrawals: Vec<(String, ConsentChannel)> = records
        .events()
        .await?
        .into_iter()
        .filter_map(|event| match event.payload {
            Some(Payload::ConsentChanged(change)) if change.state() == ConsentState::Withdrawn => {
                Some((change.contact_id.clone(), change.channel()))
            }
            _ => None,
        })
        .collect();
    withdrawals.sort();
    let mut expected = vec![
        (ada.to_string(), ConsentChannel::UnsubscribeLink),
        (grace.to_string(), ConsentChannel::ListUnsubscribe),
    ];
    expected.sort();
    assert_eq!(withdrawals, expected);
    suite.stop().await
}

/// One row of an import: a contact of Example AG at `site`.
fn import_row(line: u64, email: &str, site: &str) -> ImportLeadsRequest {
    ImportLeadsRequest {
        line_number: line,
        contact: Some(ContactProfile {
            email: email.to_owned(),
            ..Default::default()
        }),
        lead: Some(LeadProfile {
            company_name: "Example AG".to_owned(),
            web_domain: "example.com".to_owned(),
            site: site.to_owned(),
            ..Default::default()
        }),
        idempotency_key: format!("fair-2026-line-{line}"),
        ..Default::default()
    }
}

fn imported_consent(confirmed: bool) -> ImportedConsent {
    ImportedConsent {
        wording_version: "fair-2026".to_owned(),
        wording: "Send me ERP news by mail.".to_owned(),
        given_at: Some(leadflow_platform::time::to_timestamp(
            Utc::now() - Duration::days(2),
        )),
        confirmed,
        evidence: "badge scan, booth 4".to_owned(),
        ..Default::default()
    }
}

async fn import(
    suite: &TestSuite,
    rows: Vec<ImportLeadsRequest>,
) -> anyhow::Result<Vec<ImportLeadsResponse>> {
    let mut answers = suite
        .capture()
        .import_leads(tokio_stream::iter(rows))
        .await?
        .into_inner();
    let mut all = Vec::new();
    while let Some(answer) = answers.message().await? {
        all.push(answer);
    }
    Ok(all)
}

#[tokio::test]
async fn an_import_answers_each_row_and_records_the_imported_consent() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let records = CaptureRecords::open(&suite, None).await?;
    let rows = vec![
        ImportLeadsRequest {
            consent: Some(imported_consent(true)),
            ..import_row(2, "ada@example.com", "Berlin")
        },
        import_row(3, "ada@@example", "Berlin"),
        ImportLeadsRequest {
            consent: Some(imported_consent(false)),
            ..import_row(4, "grace@example.com", " berlin ")
        },
        ImportLeadsRequest {
            validate_only: true,
            ..import_row(5, "linus@example.com", "Hamburg")
        },
    ];
    let answers = import(&suite, rows.clone()).await?;
    let summary: Vec<(u64, ItemStatus)> = answers
        .iter()
        .map(|answer| (answer.line_number, answer.status()))
        .collect();
    assert_eq!(
        summary,
        [
            (2, ItemStatus::Accepted),
            (3, ItemStatus::Rejected),
            (4, ItemStatus::Accepted),
            (5, ItemStatus::Validated)
        ]
    );
    let error = answers[1].error.clone().expect("why line 3 was rejected");
    assert_eq!(
        (error.code, error.field.as_str()),
        (Code::InvalidArgument as i32, "contact.email")
    );
    assert!(answers[1].contact_id.is_empty());
    let (ada, grace) = (&answers[0], &answers[2]);
    assert_eq!(ada.contact_outcome(), RecordOutcome::Created);
    assert_eq!(grace.contact_outcome(), RecordOutcome::Created);
    assert_ne!(ada.contact_id, grace.contact_id);
    assert_eq!(ada.lead_id, grace.lead_id, "same company and site");
    assert!(!ada.account_id.is_empty());
    assert_eq!(ada.account_id, grace.account_id);
    assert!(answers[3].contact_id.is_empty() && answers[3].lead_id.is_empty());
    let unknown = contact_by_email(&suite, "linus@example.com")
        .await
        .expect_err("a validated row writes nothing");
    assert_eq!(unknown.code(), Code::NotFound);

    let ada_consent = consent_of(&suite, &ada.contact_id).await?;
    assert_eq!(ada_consent.current.len(), 1);
    assert_eq!(ada_consent.current[0].state(), ConsentState::Confirmed);
    assert_eq!(ada_consent.current[0].wording_version, "fair-2026");
    let evidence: Vec<(ConsentState, ConsentChannel)> = ada_consent
        .history
        .iter()
        .map(|record| (record.state(), record.channel()))
        .collect();
    assert_eq!(
        evidence,
        [(ConsentState::Confirmed, ConsentChannel::Import)]
    );
    assert_eq!(ada_consent.history[0].note, "badge scan, booth 4");
    assert!(records.mailed_links("ada@example.com").await?.is_empty());
    assert_eq!(
        consent_now(&suite, &grace.contact_id).await?,
        (ConsentState::Granted, ConsentChannel::Import)
    );
    assert_eq!(
        records.mailed_links("grace@example.com").await?.len(),
        1,
        "an unconfirmed imported consent asks for confirmation"
    );

    let again = import(&suite, rows).await?;
    assert_eq!(again, answers, "the same keys get the same answers");
    let lead = suite
        .capture()
        .get_lead(GetLeadRequest {
            lead_id: ada.lead_id.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(lead.contacts.len(), 2, "no contact was created twice");
    assert_eq!(records.mailed_links("grace@example.com").await?.len(), 1);
    let captured = records
        .events()
        .await?
        .iter()
        .filter(|event| matches!(event.payload, Some(Payload::ContactCaptured(_))))
        .count();
    assert_eq!(captured, 2, "one capture per accepted row");
    suite.stop().await
}

/// An update of the fields named in `paths` of `form_id` to the values of `changes`.
fn form_update(
    form_id: &str,
    changes: Form,
    paths: &[&str],
    expected_revision: i64,
    key: &str,
) -> UpdateFormRequest {
    UpdateFormRequest {
        form: Some(Form {
            form_id: form_id.to_owned(),
            ..changes
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: paths.iter().map(|path| (*path).to_owned()).collect(),
        }),
        expected_revision,
        idempotency_key: key.to_owned(),
    }
}

/// The fields a refusal's `google.rpc.BadRequest` names, in its order.
pub(crate) fn violated_fields(status: &Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|details| {
            details
                .field_violations
                .into_iter()
                .map(|violation| violation.field)
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_form_update_versions_its_wording_checks_its_revision_and_archives() -> anyhow::Result<()>
{
    let suite = TestSuite::start().await?;
    let mut capture = suite.capture();
    let form = create_form(&suite, trade_fair_form()).await?;
    let id = form.form_id.as_str();
    let reworded = Form {
        consent_wording: "Send me ERP news and invitations by mail.".to_owned(),
        consent_wording_version: "2027-01".to_owned(),
        ..Default::default()
    };

    let unversioned = capture
        .update_form(form_update(
            id,
            reworded.clone(),
            &["consent_wording"],
            1,
            "u1",
        ))
        .await
        .expect_err("a new wording needs a new version");
    assert_eq!(unversioned.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&unversioned),
        ["form.consent_wording_version"]
    );
    let fixed = capture
        .update_form(form_update(id, reworded.clone(), &["form_id"], 1, "u2"))
        .await
        .expect_err("the id is the server's");
    assert_eq!(fixed.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&fixed), ["update_mask"]);

    let updated = capture
        .update_form(form_update(
            id,
            reworded.clone(),
            &["consent_wording", "consent_wording_version"],
            1,
            "u3",
        ))
        .await?
        .into_inner()
        .form
        .expect("form");
    assert_eq!(updated.revision, 2);
    assert_eq!(updated.consent_wording, reworded.consent_wording);
    assert_eq!(updated.consent_wording_version, "2027-01");
    assert_eq!(updated.name, form.name, "fields outside the mask stay");
    let history: Vec<(&str, &str)> = updated
        .consent_wording_history
        .iter()
        .map(|wording| (wording.version.as_str(), wording.text.as_str()))
        .collect();
    assert_eq!(
        history,
        [(
            form.consent_wording_version.as_str(),
            form.consent_wording.as_str()
        )]
    );

    let stale = capture
        .update_form(form_update(
            id,
            Form {
                name: "Renamed".to_owned(),
                ..Default::default()
            },
            &["name"],
            1,
            "u4",
        ))
        .await
        .expect_err("revision 1 is gone");
    assert_eq!(stale.code(), Code::Aborted);
    let reused_version = capture
        .update_form(form_update(
            id,
            Form {
                consent_wording: "Something else.".to_owned(),
                consent_wording_version: form.consent_wording_version.clone(),
                ..Default::default()
            },
            &["consent_wording", "consent_wording_version"],
            2,
            "u5",
        ))
        .await
        .expect_err("an earlier version cannot come back");
    assert_eq!(reused_version.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&reused_version),
        ["form.consent_wording_version"]
    );

    let archived = capture
        .update_form(form_update(
            id,
            Form {
                state: FormState::Archived.into(),
                ..Default::default()
            },
            &["state"],
            2,
            "u6",
        ))
        .await?
        .into_inner()
        .form
        .expect("form");
    assert_eq!(archived.state(), FormState::Archived);
    assert_eq!(archived.revision, 3);
    let refused = capture
        .submit_form(submission(
            id,
            "after-archive",
            &[
                ("email", "ada@example.com"),
                ("first_name", "Ada"),
                ("company", "Example AG"),
            ],
        ))
        .await
        .expect_err("an archived form takes no submissions");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    suite.stop().await
}

fn field_names(fields: &[leadflow_proto::capture::v1::FormField]) -> Vec<&str> {
    fields.iter().map(|field| field.name.as_str()).collect()
}

#[tokio::test]
async fn resolving_a_form_asks_a_known_visitor_only_what_comes_next() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let mut capture = suite.capture();
    let form = create_form(
        &suite,
        Form {
            ask_next_fields: vec!["site".to_owned(), "job_title".to_owned()],
            ask_next_limit: 1,
            ..single_opt_in_form()
        },
    )
    .await?;
    let resolve =
        |subject: Option<resolve_form_fields_request::Subject>| ResolveFormFieldsRequest {
            form_id: form.form_id.clone(),
            subject,
        };
    let visitor = |id: &str| {
        Some(resolve_form_fields_request::Subject::VisitorId(
            id.to_owned(),
        ))
    };

    for subject in [None, visitor("v-first-visit")] {
        let unknown = capture
            .resolve_form_fields(resolve(subject.clone()))
            .await?
            .into_inner();
        assert!(!unknown.known_contact, "{subject:?}");
        assert_eq!(unknown.fields, form.fields, "{subject:?}: every field");
    }

    let submitted = submit(
        &suite,
        SubmitFormRequest {
            visitor_id: "v-returning".to_owned(),
            ..submission(
                &form.form_id,
                "ada",
                &[
                    ("email", "ada@example.com"),
                    ("first_name", "Ada"),
                    ("company", "Example AG"),
                ],
            )
        },
    )
    .await?;
    for subject in [
        visitor("v-returning"),
        Some(resolve_form_fields_request::Subject::ContactId(
            submitted.contact_id.clone(),
        )),
    ] {
        let known = capture
            .resolve_form_fields(resolve(subject.clone()))
            .await?
            .into_inner();
        assert!(known.known_contact, "{subject:?}");
        assert_eq!(
            field_names(&known.fields),
            ["email", "site"],
            "{subject:?}: the email and the next unanswered field"
        );
    }

    let missing = capture
        .resolve_form_fields(resolve(Some(
            resolve_form_fields_request::Subject::ContactId(Uuid::now_v7().to_string()),
        )))
        .await
        .expect_err("an unknown contact");
    assert_eq!(missing.code(), Code::NotFound);
    suite.stop().await
}

#[tokio::test]
async fn a_later_submission_fills_in_and_never_blanks_what_is_known() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let form = create_form(&suite, crate::capture::whitepaper_form()).await?;
    let by_ada = |key: &str, first_name: &str, industry: &str, job_title: &str| SubmitFormRequest {
        consent_given: false,
        ..submission(
            &form.form_id,
            key,
            &[
                ("email", "ada@example.com"),
                ("first_name", first_name),
                ("industry", industry),
                ("job_title", job_title),
            ],
        )
    };

    let first = submit(&suite, by_ada("first", "Ada", "Manufacturing", "Engineer")).await?;
    assert_eq!(first.contact_outcome(), RecordOutcome::Created);
    // Blank: the optional industry, and the required first name the contact already has.
    let second = submit(&suite, by_ada("second", "", "", "Head of IT")).await?;
    assert_eq!(second.contact_id, first.contact_id);
    assert_eq!(second.contact_outcome(), RecordOutcome::Updated);
    assert_eq!(
        second.lead_outcome(),
        RecordOutcome::Unchanged,
        "a blank industry changes nothing"
    );

    let ada = contact_by_email(&suite, "ada@example.com").await?;
    let profile = ada.profile.clone().expect("profile");
    assert_eq!(profile.first_name, "Ada");
    assert_eq!(profile.job_title, "Head of IT", "the new value replaces");
    let lead = suite
        .capture()
        .get_lead(GetLeadRequest {
            lead_id: ada.lead_id.clone(),
        })
        .await?
        .into_inner()
        .lead
        .expect("lead");
    assert_eq!(
        lead.profile.expect("lead profile").industry,
        "Manufacturing",
        "a blank never erases"
    );

    let third = submit(&suite, by_ada("third", "", "", "Head of IT")).await?;
    assert_eq!(third.contact_id, first.contact_id);
    assert_eq!(third.contact_outcome(), RecordOutcome::Unchanged);
    assert_eq!(third.lead_outcome(), RecordOutcome::Unchanged);
    suite.stop().await
}

#[tokio::test]
async fn a_visitor_merges_once_and_into_one_contact_only() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let mut capture = suite.capture();
    let form = create_form(&suite, single_opt_in_form()).await?;
    let ada = captured_contact(&suite, &form, "ada@example.com").await?;
    let grace = captured_contact(&suite, &form, "grace@example.com").await?;
    let visitor = "v-5e1f0c";
    let visit = capture
        .track_activity(TrackActivityRequest {
            activity: Some(ActivityInput {
                subject: Some(activity_input::Subject::VisitorId(visitor.to_owned())),
                r#type: ActivityType::PageVisited.into(),
                source: "website".to_owned(),
                ..Default::default()
            }),
            idempotency_key: "visit-1".to_owned(),
        })
        .await?
        .into_inner()
        .activity
        .expect("activity");
    assert!(visit.contact_id.is_empty(), "still anonymous");
    let merge = |contact_id: Uuid, key: &str| MergeVisitorRequest {
        visitor_id: visitor.to_owned(),
        contact: Some(merge_visitor_request::Contact::ContactId(
            contact_id.to_string(),
        )),
        idempotency_key: key.to_owned(),
    };

    let merged = capture.merge_visitor(merge(ada, "m1")).await?.into_inner();
    assert_eq!(merged.moved_activity_count, 1);
    assert_eq!(merged.contact_id, ada.to_string());
    let retried = capture.merge_visitor(merge(ada, "m1")).await?.into_inner();
    assert_eq!(retried, merged, "a retry gets the first answer");
    let history = activities_of(&suite, &ada.to_string(), Some(ActivityType::PageVisited)).await?;
    let moved: Vec<(&str, &str)> = history
        .iter()
        .map(|activity| (activity.activity_id.as_str(), activity.lead_id.as_str()))
        .collect();
    assert_eq!(
        moved,
        [(visit.activity_id.as_str(), merged.lead_id.as_str())]
    );
    let contact = contact_by_email(&suite, "ada@example.com").await?;
    assert_eq!(contact.visitor_ids, [visitor]);

    let again = capture.merge_visitor(merge(ada, "m2")).await?.into_inner();
    assert_eq!(again.moved_activity_count, 0, "nothing left to move");
    assert_eq!(again.contact_id, ada.to_string());

    let elsewhere = capture
        .merge_visitor(merge(grace, "m3"))
        .await
        .expect_err("the visitor is Ada");
    assert_eq!(elsewhere.code(), Code::FailedPrecondition);
    let submitted_as_grace = capture
        .submit_form(SubmitFormRequest {
            visitor_id: visitor.to_owned(),
            ..submission(
                &form.form_id,
                "grace-with-ada-visitor",
                &[("email", "grace@example.com")],
            )
        })
        .await
        .expect_err("a submission cannot take the visitor from Ada either");
    assert_eq!(submitted_as_grace.code(), Code::FailedPrecondition);
    assert!(
        activities_of(&suite, &grace.to_string(), Some(ActivityType::PageVisited))
            .await?
            .is_empty()
    );
    suite.stop().await
}

/// The public ingress takes a client's burst, then refuses it with 429 and the seconds to
/// wait, before any handler runs; health probes are never refused.
#[tokio::test]
async fn the_ingress_limits_each_client_to_its_rate() -> anyhow::Result<()> {
    let data_dir = crate::embedded::temporary_data_dir();
    let ingress = leadflow_platform::config::IngressSettings {
        rate_limit_per_minute: 6,
        rate_limit_burst: 3,
        ..leadflow_tests::test_ingress(None)
    };
    let suite = TestSuite::start_embedded_with_ingress(&data_dir, ingress).await?;
    // Tracking hits with no valid token: each reaches the handler, which refuses the token.
    let path = "/v1/t/open?token=not-a-token";
    for hit in 0..3 {
        let answer = suite.http("GET", path, &[], b"").await?;
        assert_ne!(answer.status, 429, "hit {hit} is within the burst");
    }
    let refused = suite.http("GET", path, &[], b"").await?;
    assert_eq!(refused.status, 429, "{}", refused.text());
    let wait: u64 = refused
        .header("retry-after")
        .expect("a Retry-After header")
        .parse()?;
    assert!(
        (1..=10).contains(&wait),
        "one request comes back every 10 s: {wait}"
    );
    assert!(
        refused.text().contains("too many requests"),
        "{}",
        refused.text()
    );
    let form_post = suite
        .http(
            "POST",
            &format!("/v1/forms/{}/submissions", Uuid::now_v7()),
            &[("content-type", "application/json")],
            b"{}",
        )
        .await?;
    assert_eq!(
        form_post.status, 429,
        "form posts share the client's bucket"
    );
    for _ in 0..5 {
        let health = suite.http("GET", "/healthz", &[], b"").await?;
        assert_eq!(health.status, 200, "health probes are not limited");
    }
    suite.stop().await?;
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(())
}

/// A message over the servers' 4 MiB limit is refused before any handler reads it (tonic
/// answers OUT_OF_RANGE, naming the limit), and the call after it is served as usual.
#[tokio::test]
async fn an_oversized_message_is_refused_before_it_is_read() -> anyhow::Result<()> {
    let data_dir = crate::embedded::temporary_data_dir();
    let suite = TestSuite::start_embedded(&data_dir).await?;
    let visit = |source: String, key: &str| TrackActivityRequest {
        activity: Some(ActivityInput {
            subject: Some(activity_input::Subject::VisitorId("visitor-big".to_owned())),
            r#type: ActivityType::PageVisited.into(),
            source,
            ..Default::default()
        }),
        idempotency_key: key.to_owned(),
    };
    let refused = suite
        .capture()
        .track_activity(visit("x".repeat(5 * 1024 * 1024), "big-1"))
        .await
        .expect_err("a 5 MiB message");
    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");
    assert!(refused.message().contains("4194304"), "{refused:?}");
    suite
        .capture()
        .track_activity(visit("website".to_owned(), "small-1"))
        .await?;
    suite.stop().await?;
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(())
}

/// Leads list newest first, page by page, filtered by country and web domain; a malformed
/// filter or a foreign page token is refused naming its field.
async fn leads_list_newest_first_page_by_page_and_by_filter(
    suite: &TestSuite,
) -> anyhow::Result<()> {
    use leadflow_proto::capture::v1::ListLeadsRequest;

    let form = create_form(suite, trade_fair_form()).await?;
    let mut lead_ids = Vec::new();
    for (email, company, country) in [
        ("ida@acme.example", "Acme", "DE"),
        ("bo@bolt.example", "Bolt", "AT"),
        ("cy@cogs.example", "Cogs", "DE"),
    ] {
        let mut request = submission(
            &form.form_id,
            &format!("lead-{company}"),
            &[
                ("email", email),
                ("first_name", "Sam"),
                ("company", company),
            ],
        );
        request.lead = Some(LeadProfile {
            country_code: country.to_owned(),
            ..Default::default()
        });
        let answer = suite.capture().submit_form(request).await?.into_inner();
        lead_ids.push(answer.lead_id);
    }
    let list = |request: ListLeadsRequest| {
        let mut capture = suite.capture();
        async move {
            capture
                .list_leads(request)
                .await
                .map(|answer| answer.into_inner())
        }
    };
    let ids = |leads: &[leadflow_proto::capture::v1::Lead]| -> Vec<String> {
        leads.iter().map(|lead| lead.lead_id.clone()).collect()
    };
    let newest_first: Vec<String> = lead_ids.iter().rev().cloned().collect();

    let first = list(ListLeadsRequest {
        page_size: 2,
        ..Default::default()
    })
    .await?;
    assert_eq!(ids(&first.leads), newest_first[..2]);
    assert_eq!(first.leads[0].contact_count, 1);
    let second = list(ListLeadsRequest {
        page_size: 2,
        page_token: first.next_page_token.clone(),
        ..Default::default()
    })
    .await?;
    assert_eq!(ids(&second.leads), newest_first[2..]);
    assert!(second.next_page_token.is_empty(), "the last page");

    let in_germany = list(ListLeadsRequest {
        country_code: "de".to_owned(),
        ..Default::default()
    })
    .await?;
    assert_eq!(
        ids(&in_germany.leads),
        [lead_ids[2].clone(), lead_ids[0].clone()]
    );
    let bolt = list(ListLeadsRequest {
        web_domain: "Bolt.Example".to_owned(),
        ..Default::default()
    })
    .await?;
    assert_eq!(ids(&bolt.leads), [lead_ids[1].clone()]);

    let bad_country = list(ListLeadsRequest {
        country_code: "Deutschland".to_owned(),
        ..Default::default()
    })
    .await
    .expect_err("not a country code");
    assert_eq!(bad_country.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&bad_country), ["country_code"]);
    let foreign_token = list(ListLeadsRequest {
        page_token: Uuid::now_v7().to_string(),
        ..Default::default()
    })
    .await
    .expect_err("a token this listing never returned");
    assert_eq!(violated_fields(&foreign_token), ["page_token"]);
    Ok(())
}

#[tokio::test]
async fn leads_list_by_filter_on_postgresql() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    leads_list_newest_first_page_by_page_and_by_filter(&suite).await?;
    suite.stop().await
}

#[tokio::test]
async fn leads_list_by_filter_embedded() -> anyhow::Result<()> {
    let data_dir = crate::embedded::temporary_data_dir();
    let suite = TestSuite::start_embedded(&data_dir).await?;
    let outcome = leads_list_newest_first_page_by_page_and_by_filter(&suite).await;
    suite.stop().await?;
    let _ = std::fs::remove_dir_all(&data_dir);
    outcome
}
