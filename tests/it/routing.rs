//! Sales reps through the gRPC API: stored with working hours and absences, unique by
//! email, created once per idempotency key, refused with each wrong field named.

use leadflow_proto::{
    common::v1::TimeRange,
    routing::v1::{CreateRepRequest, DayOfWeek, GetRepRequest, ListRepsRequest, Rep, WorkingHours},
};
use leadflow_tests::TestSuite;
use tonic::Code;
use tonic_types::StatusExt;

pub(crate) fn rep(email: &str) -> Rep {
    Rep {
        email: email.to_owned(),
        display_name: "Jana Novak".to_owned(),
        time_zone: "Europe/Berlin".to_owned(),
        working_hours: [DayOfWeek::Monday, DayOfWeek::Tuesday]
            .into_iter()
            .map(|day| WorkingHours {
                day_of_week: day.into(),
                start_minute: 8 * 60,
                end_minute: 17 * 60,
            })
            .collect(),
        out_of_office: vec![TimeRange {
            start_time: Some(prost_types::Timestamp {
                seconds: 1_798_761_600,
                nanos: 0,
            }),
            end_time: Some(prost_types::Timestamp {
                seconds: 1_799_366_400,
                nanos: 0,
            }),
        }],
        products: vec!["erp".to_owned()],
        languages: vec!["de".to_owned(), "en".to_owned()],
        capacity: 25,
        weight: 2,
        active: true,
        ..Default::default()
    }
}

async fn create(suite: &TestSuite, rep: Rep, key: &str) -> Result<Rep, tonic::Status> {
    Ok(suite
        .routing()
        .create_rep(CreateRepRequest {
            rep: Some(rep),
            idempotency_key: key.to_owned(),
        })
        .await?
        .into_inner()
        .rep
        .expect("rep"))
}

#[tokio::test]
async fn reps_are_stored_with_hours_and_absences_and_listed() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let jana = create(&suite, rep("Jana.Novak@Example.com"), "rep-1").await?;
    assert_eq!(jana.email, "jana.novak@example.com", "stored normalised");
    assert_eq!(jana.working_hours, rep("x@example.com").working_hours);
    assert_eq!(jana.out_of_office, rep("x@example.com").out_of_office);
    let fetched = suite
        .routing()
        .get_rep(GetRepRequest {
            rep_id: jana.rep_id.clone(),
        })
        .await?
        .into_inner()
        .rep
        .expect("rep");
    assert_eq!(fetched, jana);

    let max = create(&suite, rep("max@example.com"), "rep-2").await?;
    let page = suite
        .routing()
        .list_reps(ListRepsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(page.reps, [jana]);
    let rest = suite
        .routing()
        .list_reps(ListRepsRequest {
            page_size: 1,
            page_token: page.next_page_token,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(rest.reps, [max]);
    assert!(rest.next_page_token.is_empty());

    let unknown_team = suite
        .routing()
        .list_reps(ListRepsRequest {
            team_id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        })
        .await
        .expect_err("no such team");
    assert_eq!(unknown_team.code(), Code::NotFound);
    suite.stop().await
}

#[tokio::test]
async fn an_email_belongs_to_one_rep_and_a_retry_creates_nothing_twice() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let first = create(&suite, rep("jana@example.com"), "rep-a").await?;
    let retry = create(&suite, rep("jana@example.com"), "rep-a").await?;
    assert_eq!(first, retry);
    let duplicate = create(&suite, rep("JANA@example.com"), "rep-b")
        .await
        .expect_err("same email");
    assert_eq!(duplicate.code(), Code::AlreadyExists);
    let listed = suite
        .routing()
        .list_reps(ListRepsRequest::default())
        .await?
        .into_inner();
    assert_eq!(listed.reps.len(), 1);
    suite.stop().await
}

#[tokio::test]
async fn an_invalid_rep_names_each_wrong_field() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let mut bad = rep("not-an-email");
    bad.time_zone = "Mars/Olympus".to_owned();
    bad.working_hours.push(WorkingHours {
        day_of_week: DayOfWeek::Monday.into(),
        start_minute: 16 * 60,
        end_minute: 18 * 60,
    });
    bad.working_hours.push(WorkingHours {
        day_of_week: DayOfWeek::Friday.into(),
        start_minute: 9 * 60,
        end_minute: 9 * 60,
    });
    bad.capacity = 0;
    let status = create(&suite, bad, "rep-bad").await.expect_err("invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    let details = status
        .get_details_bad_request()
        .expect("bad request details");
    let fields: Vec<&str> = details
        .field_violations
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    assert_eq!(
        fields,
        [
            "rep.email",
            "rep.time_zone",
            "rep.working_hours[2]",
            "rep.working_hours[3].end_minute",
            "rep.capacity",
        ]
    );
    suite.stop().await
}
