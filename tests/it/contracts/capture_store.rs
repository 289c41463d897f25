//! Capture's records port: rows read back exactly as written on both stores, a unit is
//! all or nothing, visitor activities move to their contact, activities list most recent
//! first page by page, consent records keep their written order, and mails and events
//! leave only with a commit.

use std::{collections::BTreeMap, sync::Arc};

use chrono::{DateTime, Duration, Utc};
use leadflow_capture::{
    CaptureStore, PostgresCaptureStore, SqliteCaptureStore,
    records::{
        AccountRow, ActivityFilter, ActivityRow, ActivitySubject, CaptureUnit, ConsentRow,
        ContactRow, LeadRow, OutboundMail, VisitorRow,
    },
};
use leadflow_platform::time::to_timestamp;
use leadflow_proto::{
    capture::v1::ClientInfo,
    common::v1::{ActivityType, BuyingStage, CampaignAttribution, ContactProfile, LeadProfile},
    events::v1::{ConsentChannel, ConsentState, EventEnvelope},
};
use leadflow_storage::{Begun, IdempotencyKey};
use uuid::Uuid;

use super::{Backing, contract};

/// The store under test, and a way to count its outbox rows.
struct Store {
    records: Arc<dyn CaptureStore>,
    outbox: Outbox,
}

enum Outbox {
    Postgres(sqlx::PgPool),
    Sqlite(sqlx::SqlitePool),
}

impl Store {
    async fn published(&self) -> anyhow::Result<i64> {
        let count_sql = "SELECT count(*) FROM outbox";
        Ok(match &self.outbox {
            Outbox::Postgres(pool) => sqlx::query_scalar(count_sql).fetch_one(pool).await?,
            Outbox::Sqlite(pool) => sqlx::query_scalar(count_sql).fetch_one(pool).await?,
        })
    }

    async fn unit(&self, key: &str) -> anyhow::Result<Box<dyn CaptureUnit>> {
        match self.records.begin(&request_key(key, b"request")).await? {
            Begun::Fresh(unit) => Ok(unit),
            other => anyhow::bail!("a fresh key, got {}", begun_name(&other)),
        }
    }
}

fn begun_name<T>(begun: &Begun<T>) -> &'static str {
    match begun {
        Begun::Fresh(_) => "fresh",
        Begun::Replay(_) => "replay",
        Begun::KeyReused => "key reused",
    }
}

fn request_key(key: &str, request: &[u8]) -> IdempotencyKey {
    IdempotencyKey {
        key: key.to_owned(),
        request: request.to_vec(),
    }
}

async fn postgres_store() -> anyhow::Result<(Backing, Store)> {
    let (backing, capture) =
        super::postgres(leadflow_capture::SCHEMA, &leadflow_capture::MIGRATOR).await?;
    let pool = capture.pool().clone();
    Ok((
        backing,
        Store {
            records: Arc::new(PostgresCaptureStore::new(pool.clone())),
            outbox: Outbox::Postgres(pool),
        },
    ))
}

async fn sqlite_store() -> anyhow::Result<(Backing, Store)> {
    let (backing, capture) =
        super::sqlite(leadflow_capture::SCHEMA, &leadflow_capture::SQLITE_MIGRATOR).await?;
    let pool = capture.pool().clone();
    Ok((
        backing,
        Store {
            records: Arc::new(SqliteCaptureStore::new(pool.clone())),
            outbox: Outbox::Sqlite(pool),
        },
    ))
}

/// A time both stores keep exactly (microseconds).
fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(1_790_000_000_000_000 + seconds * 1_000_000 + 123_456)
        .expect("in range")
}

fn account(domain: &str) -> AccountRow {
    AccountRow {
        account_id: Uuid::now_v7(),
        web_domain: domain.to_owned(),
        name: "Example AG".to_owned(),
        create_time: at(0),
        update_time: at(0),
    }
}

fn lead(account: Option<&AccountRow>, site: &str) -> LeadRow {
    LeadRow {
        lead_id: Uuid::now_v7(),
        account_id: account.map(|account| account.account_id),
        profile: LeadProfile {
            company_name: "Example AG".to_owned(),
            web_domain: account.map(|a| a.web_domain.clone()).unwrap_or_default(),
            site: site.to_owned(),
            employee_count: 250,
            country_code: "DE".to_owned(),
            source: "website".to_owned(),
            ..Default::default()
        },
        first_attribution: Some(CampaignAttribution {
            source: "newsletter".to_owned(),
            ..Default::default()
        }),
        create_time: at(1),
        update_time: at(1),
    }
}

fn contact(lead: &LeadRow, email: &str) -> ContactRow {
    ContactRow {
        contact_id: Uuid::now_v7(),
        lead_id: lead.lead_id,
        profile: ContactProfile {
            email: email.to_owned(),
            first_name: "Ada".to_owned(),
            job_title: "Head of IT".to_owned(),
            ..Default::default()
        },
        custom_fields: BTreeMap::from([("budget".to_owned(), "50k".to_owned())]),
        source: "website".to_owned(),
        first_attribution: None,
        create_time: at(2),
        update_time: at(2),
        last_activity_time: Some(at(3)),
    }
}

fn activity(contact: Option<&ContactRow>, visitor: &str, seconds: i64) -> ActivityRow {
    ActivityRow {
        activity_id: Uuid::now_v7().to_string(),
        contact_id: contact
            .map(|c| c.contact_id.to_string())
            .unwrap_or_default(),
        lead_id: contact.map(|c| c.lead_id.to_string()).unwrap_or_default(),
        visitor_id: visitor.to_owned(),
        r#type: ActivityType::PageVisited.into(),
        product: "erp".to_owned(),
        occurred_at: Some(to_timestamp(at(seconds))),
        source: "website".to_owned(),
        recorded_at: Some(to_timestamp(at(100))),
        ..Default::default()
    }
}

fn consent(contact: &ContactRow, state: ConsentState, seconds: i64) -> ConsentRow {
    ConsentRow {
        consent_id: Uuid::now_v7().to_string(),
        contact_id: contact.contact_id.to_string(),
        purpose: "nurture-email".to_owned(),
        state: state.into(),
        wording_version: "2026-11".to_owned(),
        channel: ConsentChannel::Form.into(),
        occurred_at: Some(to_timestamp(at(seconds))),
        recorded_at: Some(to_timestamp(at(100))),
        recorded_by: "capture-form".to_owned(),
        ..Default::default()
    }
}

/// An account, a lead of it and a contact of that lead, committed.
async fn seeded(store: &Store) -> anyhow::Result<(AccountRow, LeadRow, ContactRow)> {
    let account = account("example.com");
    let lead = lead(Some(&account), "Berlin");
    let contact = contact(&lead, "ada@example.com");
    let mut unit = store.unit(&Uuid::now_v7().to_string()).await?;
    unit.put_account(&account).await?;
    unit.put_lead(&lead).await?;
    unit.put_contact(&contact).await?;
    unit.commit().await?;
    Ok((account, lead, contact))
}

async fn rows_read_back_as_written(store: Store) -> anyhow::Result<()> {
    let (account, mut lead, mut contact) = seeded(&store).await?;
    let private = self::lead(None, "");
    let mut unit = store.unit("k-private").await?;
    unit.put_lead(&private).await?;
    unit.commit().await?;

    let mut read = store.records.read().await?;
    assert_eq!(
        read.account(account.account_id).await?,
        Some(account.clone())
    );
    assert_eq!(
        read.account_by_domain("example.com").await?,
        Some(account.clone())
    );
    assert_eq!(read.lead(lead.lead_id).await?, Some(lead.clone()));
    assert_eq!(read.lead(private.lead_id).await?, Some(private.clone()));
    let site_key = leadflow_domain::site_key(" BERLIN ");
    assert_eq!(
        read.lead_by_site("example.com", &site_key).await?,
        Some(lead.clone())
    );
    assert_eq!(
        read.lead_by_site("", "").await?,
        None,
        "no company, no match"
    );
    assert_eq!(
        read.contact(contact.contact_id).await?,
        Some(contact.clone())
    );
    assert_eq!(
        read.contact_by_email("ada@example.com").await?,
        Some(contact.clone())
    );
    assert_eq!(read.lead_count(account.account_id).await?, 1);
    assert_eq!(read.contact_count(lead.lead_id).await?, 1);
    drop(read);

    let second = self::lead(Some(&account), "Hamburg");
    let grace = self::contact(&lead, "grace@example.com");
    lead.profile.industry = "manufacturing".to_owned();
    lead.update_time = at(5);
    contact.profile.job_title = "CIO".to_owned();
    contact.update_time = at(5);
    let mut unit = store.unit("k-update").await?;
    unit.put_lead(&second).await?;
    unit.put_contact(&grace).await?;
    unit.put_lead(&lead).await?;
    unit.put_contact(&contact).await?;
    unit.commit().await?;

    let mut read = store.records.read().await?;
    assert_eq!(
        read.lead(lead.lead_id).await?,
        Some(lead.clone()),
        "updated in place"
    );
    assert_eq!(
        read.contact(contact.contact_id).await?,
        Some(contact.clone())
    );
    let leads = read.leads_of_account(account.account_id).await?;
    assert_eq!(leads, [lead.clone(), second], "oldest first");
    let contacts = read.contacts_of_lead(lead.lead_id).await?;
    assert_eq!(contacts, [contact, grace], "oldest first");
    Ok(())
}
contract!(rows_read_back_as_written on postgres_store, sqlite_store);

async fn a_unit_is_all_or_nothing_and_keys_replay(store: Store) -> anyhow::Result<()> {
    let dropped = account("dropped.example");
    let mut unit = store.unit("k-dropped").await?;
    unit.put_account(&dropped).await?;
    unit.publish(&envelope()).await?;
    drop(unit);
    let mut read = store.records.read().await?;
    assert_eq!(read.account(dropped.account_id).await?, None);
    drop(read);
    assert_eq!(store.published().await?, 0, "no event without a commit");
    assert!(
        matches!(
            store
                .records
                .begin(&request_key("k-dropped", b"request"))
                .await?,
            Begun::Fresh(_)
        ),
        "a rolled-back key is free again"
    );

    let response_id = Uuid::now_v7();
    let mut unit = store.unit("k-kept").await?;
    unit.publish(&envelope()).await?;
    unit.save_response(response_id, b"the answer", at(0))
        .await?;
    unit.complete(&request_key("k-kept", b"request"), response_id)
        .await?;
    unit.commit().await?;
    assert_eq!(store.published().await?, 1);
    let replay = store
        .records
        .begin(&request_key("k-kept", b"request"))
        .await?;
    assert!(
        matches!(replay, Begun::Replay(id) if id == response_id),
        "{}",
        begun_name(&replay)
    );
    let reused = store
        .records
        .begin(&request_key("k-kept", b"another"))
        .await?;
    assert!(
        matches!(reused, Begun::KeyReused),
        "{}",
        begun_name(&reused)
    );
    let mut read = store.records.read().await?;
    assert_eq!(
        read.response(response_id).await?,
        Some(b"the answer".to_vec())
    );
    assert_eq!(read.response(Uuid::now_v7()).await?, None);
    Ok(())
}
contract!(a_unit_is_all_or_nothing_and_keys_replay on postgres_store, sqlite_store);

fn envelope() -> EventEnvelope {
    EventEnvelope {
        event_id: Uuid::now_v7().to_string(),
        event_type: "leadflow.events.v1.ActivityRecorded".to_owned(),
        producer: "capture".to_owned(),
        ..Default::default()
    }
}

async fn visitor_activities_move_to_their_contact(store: Store) -> anyhow::Result<()> {
    let (_, _, contact) = seeded(&store).await?;
    let mut unit = store.unit("k-visits").await?;
    unit.put_visitor(&VisitorRow {
        visitor_id: "v-1".to_owned(),
        contact_id: None,
        first_seen_time: at(0),
        merge_time: None,
    })
    .await?;
    for seconds in [10, 11] {
        unit.insert_activity(&activity(None, "v-1", seconds))
            .await?;
    }
    unit.commit().await?;

    let merged = VisitorRow {
        visitor_id: "v-1".to_owned(),
        contact_id: Some(contact.contact_id),
        first_seen_time: at(0),
        merge_time: Some(at(20)),
    };
    let mut unit = store.unit("k-merge").await?;
    unit.put_visitor(&merged).await?;
    let moved = unit
        .move_visitor_activities("v-1", contact.contact_id, contact.lead_id)
        .await?;
    assert_eq!(moved, 2);
    unit.commit().await?;

    let mut read = store.records.read().await?;
    assert_eq!(read.visitor("v-1").await?, Some(merged));
    assert_eq!(read.visitors_of_contact(contact.contact_id).await?, ["v-1"]);
    let filter = ActivityFilter {
        subject: ActivitySubject::Lead(contact.lead_id),
        types: Vec::new(),
        product: None,
        occurred_from: None,
        occurred_until: None,
    };
    let listed = read.list_activities(&filter, None, 10).await?.items;
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .all(|a| a.contact_id == contact.contact_id.to_string() && a.visitor_id == "v-1")
    );
    Ok(())
}
contract!(visitor_activities_move_to_their_contact on postgres_store, sqlite_store);

async fn activities_list_most_recent_first_page_by_page(store: Store) -> anyhow::Result<()> {
    let (_, _, contact) = seeded(&store).await?;
    let mut written = Vec::new();
    let mut unit = store.unit("k-activities").await?;
    // Two at the same moment: the later id comes first.
    for (seconds, activity_type, product) in [
        (10, ActivityType::PageVisited, "erp"),
        (20, ActivityType::TeaserRead, "erp"),
        (20, ActivityType::PageVisited, "crm"),
        (30, ActivityType::WhitepaperDownloaded, "erp"),
        (40, ActivityType::PageVisited, "erp"),
    ] {
        let mut row = activity(Some(&contact), "", seconds);
        row.r#type = activity_type.into();
        row.product = product.to_owned();
        unit.insert_activity(&row).await?;
        written.push(row);
    }
    let mut full = written[3].clone();
    full.activity_id = Uuid::now_v7().to_string();
    full.occurred_at = Some(to_timestamp(at(5)));
    full.r#type = ActivityType::Custom.into();
    full.custom_type = "demo-booked".to_owned();
    full.content_item_id = "wp-erp-42".to_owned();
    full.stage = BuyingStage::SolutionSearch.into();
    full.send_id = Uuid::now_v7().to_string();
    full.form_id = Uuid::now_v7().to_string();
    full.attribution = Some(CampaignAttribution {
        campaign: "erp-q4".to_owned(),
        ..Default::default()
    });
    full.attributes = BTreeMap::from([("page".to_owned(), "/erp".to_owned())]);
    unit.insert_activity(&full).await?;
    unit.commit().await?;

    let mut read = store.records.read().await?;
    let full_id = Uuid::parse_str(&full.activity_id)?;
    assert_eq!(
        read.activity(full_id).await?,
        Some(full.clone()),
        "every field kept"
    );
    let by_contact = |types: Vec<ActivityType>,
                      product: Option<&str>,
                      from: Option<i64>,
                      until: Option<i64>| ActivityFilter {
        subject: ActivitySubject::Contact(contact.contact_id),
        types,
        product: product.map(str::to_owned),
        occurred_from: from.map(at),
        occurred_until: until.map(at),
    };
    let expected: Vec<String> = vec![
        written[4].activity_id.clone(),
        written[3].activity_id.clone(),
        written[2].activity_id.clone(),
        written[1].activity_id.clone(),
        written[0].activity_id.clone(),
        full.activity_id.clone(),
    ];
    let mut walked = Vec::new();
    let mut after = None;
    loop {
        let page = read
            .list_activities(&by_contact(Vec::new(), None, None, None), after, 2)
            .await?;
        assert!(page.items.len() <= 2);
        walked.extend(page.items.into_iter().map(|a| a.activity_id));
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(
        walked, expected,
        "most recent first, ties by the later id, no repeats"
    );

    let ids =
        |items: Vec<ActivityRow>| items.into_iter().map(|a| a.activity_id).collect::<Vec<_>>();
    let visits = read
        .list_activities(
            &by_contact(vec![ActivityType::PageVisited], None, None, None),
            None,
            10,
        )
        .await?;
    assert_eq!(
        ids(visits.items),
        [&expected[0], &expected[2], &expected[4]].map(String::clone)
    );
    let crm = read
        .list_activities(&by_contact(Vec::new(), Some("crm"), None, None), None, 10)
        .await?;
    assert_eq!(ids(crm.items), [expected[2].clone()]);
    let window = read
        .list_activities(&by_contact(Vec::new(), None, Some(20), Some(40)), None, 10)
        .await?;
    assert_eq!(
        ids(window.items),
        [&expected[1], &expected[2], &expected[3]].map(String::clone),
        "from is inclusive, until exclusive"
    );
    Ok(())
}
contract!(activities_list_most_recent_first_page_by_page on postgres_store, sqlite_store);

async fn consent_records_keep_their_written_order(store: Store) -> anyhow::Result<()> {
    let (_, _, contact) = seeded(&store).await?;
    let granted = ConsentRow {
        client: Some(ClientInfo {
            ip_address: "203.0.113.7".to_owned(),
            user_agent: "Mozilla/5.0".to_owned(),
            page_url: "https://www.example.com/erp".to_owned(),
            referrer_url: String::new(),
        }),
        wording: "Send me ERP news.".to_owned(),
        form_id: Uuid::now_v7().to_string(),
        ..consent(&contact, ConsentState::Granted, 30)
    };
    let confirmed = ConsentRow {
        previous_state: ConsentState::Granted.into(),
        channel: ConsentChannel::ConfirmationLink.into(),
        confirms_consent_id: granted.consent_id.clone(),
        ..consent(&contact, ConsentState::Confirmed, 10)
    };
    let withdrawn = ConsentRow {
        previous_state: ConsentState::Confirmed.into(),
        send_id: Uuid::now_v7().to_string(),
        note: "asked by phone".to_owned(),
        ..consent(&contact, ConsentState::Withdrawn, 20)
    };
    let mut unit = store.unit("k-consent").await?;
    for record in [&granted, &confirmed, &withdrawn] {
        unit.insert_consent(record).await?;
    }
    unit.commit().await?;
    let mut read = store.records.read().await?;
    assert_eq!(
        read.consents_of_contact(contact.contact_id).await?,
        [granted.clone(), confirmed, withdrawn],
        "written order, not occurrence order"
    );
    let granted_id = Uuid::parse_str(&granted.consent_id)?;
    assert_eq!(read.consent(granted_id).await?, Some(granted));
    Ok(())
}
contract!(consent_records_keep_their_written_order on postgres_store, sqlite_store);

async fn mails_leave_oldest_first_once(store: Store) -> anyhow::Result<()> {
    let (_, _, contact) = seeded(&store).await?;
    let mail = |minutes: i64| OutboundMail {
        mail_id: Uuid::now_v7(),
        contact_id: contact.contact_id,
        kind: "double-opt-in-confirmation".to_owned(),
        recipient: contact.profile.email.clone(),
        subject: "Please confirm".to_owned(),
        body: "Open the link".to_owned(),
        link: "https://go.example.com/v1/consent/confirm?token=t".to_owned(),
        create_time: at(0) + Duration::minutes(minutes),
    };
    let (later, earlier) = (mail(5), mail(1));
    let mut unit = store.unit("k-mail").await?;
    unit.queue_mail(&later).await?;
    unit.queue_mail(&earlier).await?;
    drop(unit);
    assert!(
        store.records.unsent_mails(10).await?.is_empty(),
        "nothing without a commit"
    );
    let mut unit = store.unit("k-mail").await?;
    unit.queue_mail(&later).await?;
    unit.queue_mail(&earlier).await?;
    unit.commit().await?;
    assert_eq!(
        store.records.unsent_mails(10).await?,
        [earlier.clone(), later.clone()]
    );
    store
        .records
        .mark_mail_sent(earlier.mail_id, at(600))
        .await?;
    assert_eq!(store.records.unsent_mails(10).await?, [later]);
    Ok(())
}
contract!(mails_leave_oldest_first_once on postgres_store, sqlite_store);
