//! Capture's HTTP ingress as browsers and mail clients use it: JSON posts and CORS,
//! tracked links that redirect only where their token says, the open pixel, and the
//! unsubscribe link that acts only on POST.

use chrono::{Duration, Utc};
use leadflow_capture::links::{LinkClaims, LinkSigner};
use leadflow_proto::{
    capture::v1::{
        CreateFormRequest, Form, GetConsentRequest, GetContactRequest, ListActivitiesRequest,
        SubmitFormRequest, get_consent_request, get_contact_request, list_activities_request,
    },
    common::v1::ActivityType,
    events::v1::{ConsentChannel, ConsentState, event_envelope::Payload},
};
use leadflow_tests::{TEST_LINK_KEY, TestSuite};
use tonic::Code;
use uuid::Uuid;

use crate::intake::{CaptureRecords, trade_fair_form};

async fn form(suite: &TestSuite, form: Form) -> anyhow::Result<Form> {
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

/// A contact with confirmed consent, captured through the API.
async fn confirmed_contact(suite: &TestSuite) -> anyhow::Result<Uuid> {
    let form = form(
        suite,
        Form {
            double_opt_in: false,
            ..trade_fair_form()
        },
    )
    .await?;
    let submitted = suite
        .capture()
        .submit_form(SubmitFormRequest {
            form_id: form.form_id,
            values: [
                ("email", "ada@example.com"),
                ("first_name", "Ada"),
                ("company", "Example AG"),
            ]
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .into(),
            consent_given: true,
            idempotency_key: "ada".to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(Uuid::parse_str(&submitted.contact_id)?)
}

fn signer() -> LinkSigner {
    LinkSigner::new(TEST_LINK_KEY.as_bytes(), &[]).expect("a long enough key")
}

async fn activity_types(suite: &TestSuite, contact_id: Uuid) -> anyhow::Result<Vec<ActivityType>> {
    Ok(suite
        .capture()
        .list_activities(ListActivitiesRequest {
            subject: Some(list_activities_request::Subject::ContactId(
                contact_id.to_string(),
            )),
            ..Default::default()
        })
        .await?
        .into_inner()
        .activities
        .iter()
        .map(|activity| activity.r#type())
        .collect())
}

#[tokio::test]
async fn json_posts_answer_json_and_foreign_origins_are_refused() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let form = form(&suite, trade_fair_form()).await?;
    let path = format!("/v1/forms/{}/submissions", form.form_id);

    let preflight = suite
        .http(
            "OPTIONS",
            &path,
            &[("origin", "https://www.example.com")],
            b"",
        )
        .await?;
    assert_eq!(preflight.status, 204);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://www.example.com")
    );
    let foreign = suite
        .http("OPTIONS", &path, &[("origin", "https://evil.example")], b"")
        .await?;
    assert_eq!(foreign.status, 403);
    let body = br#"{"email":"grace@example.com","first_name":"Grace","company":"Example AG","consent_given":true}"#;
    let refused = suite
        .http(
            "POST",
            &path,
            &[
                ("origin", "https://evil.example"),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await?;
    assert_eq!(refused.status, 403, "{}", refused.text());
    let unknown = suite
        .capture()
        .get_contact(GetContactRequest {
            lookup: Some(get_contact_request::Lookup::Email(
                "grace@example.com".to_owned(),
            )),
        })
        .await
        .expect_err("nothing written for a foreign origin");
    assert_eq!(unknown.code(), Code::NotFound);

    let bad = suite
        .http(
            "POST",
            &path,
            &[("content-type", "application/json")],
            br#"{"email":"not-an-email","first_name":"Grace","company":"Example AG"}"#,
        )
        .await?;
    assert_eq!(bad.status, 422);
    let problem: serde_json::Value = serde_json::from_slice(&bad.body)?;
    assert_eq!(
        problem["fields"][0]["field"], "values[\"email\"]",
        "{problem}"
    );

    let accepted = suite
        .http(
            "POST",
            &path,
            &[
                ("origin", "https://www.example.com"),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await?;
    assert_eq!(accepted.status, 200, "{}", accepted.text());
    let answer: serde_json::Value = serde_json::from_slice(&accepted.body)?;
    assert_eq!(answer["status"], "accepted");
    assert_eq!(answer["consent_state"], "CONSENT_STATE_GRANTED");
    suite.stop().await
}

#[tokio::test]
async fn tracked_links_redirect_only_where_their_token_says() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let contact_id = confirmed_contact(&suite).await?;
    let send_id = Uuid::now_v7();
    let expires = Utc::now() + Duration::days(30);
    let target = "https://www.example.com/erp/pricing?utm_source=nurture";
    let token = signer().sign(&LinkClaims::click(contact_id, send_id, target, expires)?);

    for _ in 0..2 {
        let clicked = suite
            .http("GET", &format!("/v1/t/click?token={token}"), &[], b"")
            .await?;
        assert!((300..400).contains(&clicked.status), "{}", clicked.status);
        assert_eq!(clicked.header("location"), Some(target));
    }
    // Changing the signed payload (e.g. to point elsewhere) breaks the signature.
    let (version, rest) = token.split_once('.').expect("a dotted token");
    let (payload, tag) = rest.split_once('.').expect("payload and tag");
    let other = signer().sign(&LinkClaims::click(
        contact_id,
        send_id,
        "https://evil.example/",
        expires,
    )?);
    let other_payload = other.split('.').nth(1).expect("payload");
    assert_ne!(payload, other_payload);
    for forged in [
        format!("{version}.{other_payload}.{tag}"),
        format!("{version}.{payload}.{}", &tag[1..]),
        "v1.bm9wZQ.bm9wZQ".to_owned(),
    ] {
        let refused = suite
            .http("GET", &format!("/v1/t/click?token={forged}"), &[], b"")
            .await?;
        assert!((400..500).contains(&refused.status), "{}", refused.status);
        assert_eq!(refused.header("location"), None, "no redirect anywhere");
    }

    let pixel = signer().sign(&LinkClaims::open(contact_id, send_id, expires));
    for _ in 0..2 {
        let opened = suite
            .http("GET", &format!("/v1/t/open?token={pixel}"), &[], b"")
            .await?;
        assert_eq!(opened.status, 200);
        assert_eq!(opened.header("content-type"), Some("image/gif"));
        assert!(opened.body.starts_with(b"GIF89a"));
    }
    let broken = suite
        .http("GET", "/v1/t/open?token=v1.x.y", &[], b"")
        .await?;
    assert_eq!(broken.status, 200, "the image shows either way");

    let mut types = activity_types(&suite, contact_id).await?;
    types.sort_by_key(|activity_type| activity_type.as_str_name());
    assert_eq!(
        types,
        [
            ActivityType::EmailOpened,
            ActivityType::FormSubmitted,
            ActivityType::LinkClicked
        ],
        "each link counts once, a bad token not at all"
    );
    suite.stop().await
}

#[tokio::test]
async fn an_unsubscribe_link_acts_on_post_only() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let records = CaptureRecords::open(&suite, None).await?;
    let contact_id = confirmed_contact(&suite).await?;
    let consent_state = || async {
        let consent = suite
            .capture()
            .get_consent(GetConsentRequest {
                contact: Some(get_consent_request::Contact::ContactId(
                    contact_id.to_string(),
                )),
                purpose: String::new(),
            })
            .await?
            .into_inner();
        anyhow::Ok(
            consent
                .history
                .last()
                .map(|record| (record.state(), record.channel())),
        )
    };
    assert_eq!(
        consent_state().await?,
        Some((ConsentState::Confirmed, ConsentChannel::Form))
    );
    let token = signer().sign(&LinkClaims::unsubscribe(
        contact_id,
        Uuid::now_v7(),
        "",
        Utc::now() + Duration::days(365),
    ));
    let path = format!("/v1/consent/unsubscribe?token={token}");

    let page = suite.http("GET", &path, &[], b"").await?;
    assert_eq!(page.status, 200);
    assert!(
        page.text().contains("<form method=\"post\""),
        "{}",
        page.text()
    );
    assert_eq!(
        consent_state().await?,
        Some((ConsentState::Confirmed, ConsentChannel::Form)),
        "a mail scanner following the link unsubscribes nobody"
    );

    let one_click = suite
        .http(
            "POST",
            &path,
            &[("content-type", "application/x-www-form-urlencoded")],
            b"List-Unsubscribe=One-Click",
        )
        .await?;
    assert_eq!(one_click.status, 200, "{}", one_click.text());
    assert_eq!(
        consent_state().await?,
        Some((ConsentState::Withdrawn, ConsentChannel::ListUnsubscribe))
    );
    let withdrawn = records
        .events()
        .await?
        .into_iter()
        .filter_map(|event| match event.payload {
            Some(Payload::ConsentChanged(change)) => Some(change.state()),
            _ => None,
        })
        .collect::<Vec<_>>();
    assert_eq!(
        withdrawn,
        [ConsentState::Confirmed, ConsentState::Withdrawn]
    );

    let forged = suite.http("POST", &format!("{path}x"), &[], b"").await?;
    assert_eq!(forged.status, 400);
    suite.stop().await
}
