//! The templates-and-tracks port: templates read back as stored and listed newest first,
//! tracks created with version 1 and published in numbered versions that never change,
//! refusals for missing templates, taken names, stale versions and unknown tracks, and
//! retries answered as the first call was.

use std::sync::Arc;

use chrono::TimeDelta;
use leadflow_nurturing::{
    NewMailTemplate, NewTrack, NurturingError, PostgresTrackRepository, PublishedVersion,
    SqliteTrackRepository, StoredMailTemplate, TrackPolicy, TrackRepository,
};
use leadflow_proto::nurturing::v1 as pb;
use leadflow_storage::{IdempotencyKey, Stored};
use uuid::Uuid;

use super::{Backing, contract};

async fn postgres_tracks() -> anyhow::Result<(Backing, Arc<dyn TrackRepository>)> {
    let (backing, nurturing) =
        super::postgres(leadflow_nurturing::SCHEMA, &leadflow_nurturing::MIGRATOR).await?;
    Ok((
        backing,
        Arc::new(PostgresTrackRepository::new(nurturing.pool().clone())),
    ))
}

async fn sqlite_tracks() -> anyhow::Result<(Backing, Arc<dyn TrackRepository>)> {
    let (backing, nurturing) = super::sqlite(
        leadflow_nurturing::SCHEMA,
        &leadflow_nurturing::SQLITE_MIGRATOR,
    )
    .await?;
    Ok((
        backing,
        Arc::new(SqliteTrackRepository::new(nurturing.pool().clone())),
    ))
}

fn key(key: &str, payload: &str) -> IdempotencyKey {
    IdempotencyKey {
        key: key.to_owned(),
        request: payload.as_bytes().to_vec(),
    }
}

fn template(name: &str, language: &str) -> NewMailTemplate {
    NewMailTemplate::parse(Some(&pb::MailTemplate {
        name: name.to_owned(),
        language: language.to_owned(),
        subject: "{{ item.title }}".to_owned(),
        html_body: "<p>Hello {{ contact.first_name }}</p>".to_owned(),
        text_body: "Hello {{ contact.first_name }}".to_owned(),
        ..Default::default()
    }))
    .expect("a valid template")
}

async fn created_template(
    repository: &dyn TrackRepository,
    name: &str,
    language: &str,
) -> anyhow::Result<StoredMailTemplate> {
    match repository
        .create_template(
            template(name, language),
            key(name, name),
            chrono::Utc::now(),
        )
        .await?
    {
        Stored::Done(stored) => Ok(stored),
        Stored::KeyReused => anyhow::bail!("key unexpectedly reused"),
    }
}

fn track(name: &str, product: &str) -> NewTrack {
    NewTrack::parse(Some(&pb::Track {
        name: name.to_owned(),
        product: product.to_owned(),
        ..Default::default()
    }))
    .expect("a valid track")
}

fn policy(offer_template_id: Uuid, change_note: &str) -> TrackPolicy {
    TrackPolicy::parse(
        Some(&pb::TrackVersion {
            offer_template_id: offer_template_id.to_string(),
            change_note: change_note.to_owned(),
            kind_templates: vec![pb::KindTemplates {
                kind: pb::ContentKind::Webinar.into(),
                offer_template_id: offer_template_id.to_string(),
                ..Default::default()
            }],
            quiet_hours: Some(pb::QuietHours {
                start_minute: 1_200,
                end_minute: 480,
                skip_weekends: true,
            }),
            ..Default::default()
        }),
        "version",
    )
    .expect("a valid version")
}

async fn created_track(
    repository: &dyn TrackRepository,
    name: &str,
    product: &str,
    offer_template_id: Uuid,
) -> anyhow::Result<PublishedVersion> {
    match repository
        .create_track(
            track(name, product),
            policy(offer_template_id, "first"),
            key(&format!("{product}/{name}"), name),
            chrono::Utc::now(),
        )
        .await?
    {
        Stored::Done(created) => Ok(created),
        Stored::KeyReused => anyhow::bail!("key unexpectedly reused"),
    }
}

async fn templates_read_back_and_list_newest_first(
    repository: Arc<dyn TrackRepository>,
) -> anyhow::Result<()> {
    let first = created_template(&*repository, "B1 offer", "en").await?;
    let second = created_template(&*repository, "B1 Angebot", "de").await?;
    let third = created_template(&*repository, "B2 offer", "en").await?;
    assert_eq!(
        repository.get_template(first.template_id).await?,
        Some(first.clone())
    );
    assert_eq!(
        first.template.merge_fields,
        ["contact.first_name", "item.title"]
    );
    assert_eq!(repository.get_template(Uuid::now_v7()).await?, None);

    let page = repository
        .list_templates(None, None, 2)
        .await?
        .expect("a page");
    assert_eq!(page.items, [third.clone(), second.clone()]);
    let rest = repository
        .list_templates(None, page.next_after, 2)
        .await?
        .expect("a page");
    assert_eq!(rest.items, std::slice::from_ref(&first));
    assert_eq!(rest.next_after, None);

    let english = repository
        .list_templates(Some("en"), None, 10)
        .await?
        .expect("a page");
    assert_eq!(english.items, [third, first.clone()]);
    assert!(
        repository
            .list_templates(Some("en"), Some(second.template_id), 10)
            .await?
            .is_none(),
        "a German template is no cursor of the English listing"
    );

    let replay = repository
        .create_template(
            template("B1 offer", "en"),
            key("B1 offer", "B1 offer"),
            chrono::Utc::now(),
        )
        .await?;
    assert_eq!(replay, Stored::Done(first));
    let reused = repository
        .create_template(
            template("other", "en"),
            key("B1 offer", "other"),
            chrono::Utc::now(),
        )
        .await?;
    assert_eq!(reused, Stored::KeyReused);
    Ok(())
}

async fn versions_are_numbered_immutable_and_answered_as_first_published(
    repository: Arc<dyn TrackRepository>,
) -> anyhow::Result<()> {
    let offer = created_template(&*repository, "offer", "en").await?;
    let created = created_track(&*repository, "ERP nurture", "erp", offer.template_id).await?;
    let track_id = created.track.track_id;
    assert_eq!(created.track.latest_version, 1);
    assert_eq!(created.version.version, 1);
    assert_eq!(created.version.policy.cadence, TimeDelta::days(21));
    assert_eq!(created.version.policy.kind_templates.len(), 1);
    assert_eq!(created.track.update_time, created.version.publish_time);

    let second = repository
        .publish_track_version(
            track_id,
            policy(offer.template_id, "second"),
            Some(1),
            key("publish-2", "second"),
            chrono::Utc::now(),
        )
        .await?;
    let Stored::Done(second) = second else {
        anyhow::bail!("key unexpectedly reused");
    };
    assert_eq!(second.version.version, 2);
    assert_eq!(second.track.latest_version, 2);

    let stale = repository
        .publish_track_version(
            track_id,
            policy(offer.template_id, "late"),
            Some(1),
            key("publish-late", "late"),
            chrono::Utc::now(),
        )
        .await;
    assert!(
        matches!(
            stale,
            Err(NurturingError::StaleLatestVersion {
                expected: 1,
                latest: 2,
                ..
            })
        ),
        "{stale:?}"
    );
    let third = repository
        .publish_track_version(
            track_id,
            policy(offer.template_id, "third"),
            None,
            key("publish-3", "third"),
            chrono::Utc::now(),
        )
        .await?;
    assert!(matches!(&third, Stored::Done(third) if third.version.version == 3));

    let retried = repository
        .publish_track_version(
            track_id,
            policy(offer.template_id, "second"),
            Some(1),
            key("publish-2", "second"),
            chrono::Utc::now(),
        )
        .await?;
    assert_eq!(
        retried,
        Stored::Done(second.clone()),
        "a retry answers as the first call did, though version 3 came since"
    );
    let created_again = repository
        .create_track(
            track("ERP nurture", "erp"),
            policy(offer.template_id, "first"),
            key("erp/ERP nurture", "ERP nurture"),
            chrono::Utc::now(),
        )
        .await?;
    assert_eq!(created_again, Stored::Done(created.clone()));

    assert_eq!(
        repository.get_track_version(track_id, 1).await?,
        Some(created.version)
    );
    assert_eq!(
        repository.get_track_version(track_id, 2).await?,
        Some(second.version)
    );
    assert_eq!(repository.get_track_version(track_id, 4).await?, None);
    let stored = repository.get_track(track_id).await?.expect("the track");
    assert_eq!(stored.latest_version, 3);
    Ok(())
}

async fn tracks_are_refused_for_missing_templates_taken_names_and_unknown_ids(
    repository: Arc<dyn TrackRepository>,
) -> anyhow::Result<()> {
    let offer = created_template(&*repository, "offer", "en").await?;
    let missing = Uuid::now_v7();
    let mut with_missing = policy(offer.template_id, "missing");
    with_missing.alternative_offer_template_id = Some(missing);
    let refused = repository
        .create_track(
            track("ERP nurture", "erp"),
            with_missing.clone(),
            key("missing", "missing"),
            chrono::Utc::now(),
        )
        .await;
    match refused {
        Err(NurturingError::TemplatesMissing(references)) => assert_eq!(
            references,
            [("alternative_offer_template_id".to_owned(), missing)]
        ),
        other => anyhow::bail!("expected missing templates, got {other:?}"),
    }
    assert!(
        repository
            .list_tracks(None, None, 10)
            .await?
            .expect("a page")
            .items
            .is_empty(),
        "a refused create leaves nothing"
    );

    created_track(&*repository, "ERP nurture", "erp", offer.template_id).await?;
    let taken = repository
        .create_track(
            track("ERP nurture", "erp"),
            policy(offer.template_id, "again"),
            key("taken", "taken"),
            chrono::Utc::now(),
        )
        .await;
    assert!(
        matches!(taken, Err(NurturingError::TrackNameTaken { .. })),
        "{taken:?}"
    );
    created_track(&*repository, "ERP nurture", "crm", offer.template_id).await?;

    let unknown = Uuid::now_v7();
    let not_found = repository
        .publish_track_version(
            unknown,
            policy(offer.template_id, "x"),
            None,
            key("unknown", "unknown"),
            chrono::Utc::now(),
        )
        .await;
    assert!(
        matches!(not_found, Err(NurturingError::TrackNotFound(id)) if id == unknown),
        "{not_found:?}"
    );
    assert_eq!(repository.get_track(unknown).await?, None);
    Ok(())
}

async fn tracks_list_by_name_per_product(
    repository: Arc<dyn TrackRepository>,
) -> anyhow::Result<()> {
    let offer = created_template(&*repository, "offer", "en").await?;
    let zeta = created_track(&*repository, "Zeta", "erp", offer.template_id).await?;
    let alpha = created_track(&*repository, "Alpha", "erp", offer.template_id).await?;
    let crm = created_track(&*repository, "Beta", "crm", offer.template_id).await?;
    let first = repository
        .list_tracks(None, None, 2)
        .await?
        .expect("a page");
    assert_eq!(first.items, [alpha.track.clone(), crm.track.clone()]);
    let rest = repository
        .list_tracks(None, first.next_after, 2)
        .await?
        .expect("a page");
    assert_eq!(rest.items, std::slice::from_ref(&zeta.track));
    assert_eq!(rest.next_after, None);
    let erp = repository
        .list_tracks(Some("erp"), None, 10)
        .await?
        .expect("a page");
    assert_eq!(erp.items, [alpha.track, zeta.track]);
    assert!(
        repository
            .list_tracks(Some("erp"), Some(crm.track.track_id), 10)
            .await?
            .is_none(),
        "a CRM track is no cursor of the ERP listing"
    );
    Ok(())
}

contract!(templates_read_back_and_list_newest_first on postgres_tracks, sqlite_tracks);
contract!(versions_are_numbered_immutable_and_answered_as_first_published on postgres_tracks, sqlite_tracks);
contract!(tracks_are_refused_for_missing_templates_taken_names_and_unknown_ids on postgres_tracks, sqlite_tracks);
contract!(tracks_list_by_name_per_product on postgres_tracks, sqlite_tracks);
