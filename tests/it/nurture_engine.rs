//! The nurture engine end to end on both stores (PostgreSQL and the embedded SQLite), with
//! an injected clock and a real SMTP server (aiosmtpd) receiving the mails: an IT manager
//! of a B1-lead gets the B1 items written for IT managers, the next one three weeks after
//! each reaction and nothing before; a contact who never reacts gets two alternative offers
//! a reaction window apart and is then recycled (EXHAUSTED, NurtureExhausted in the outbox)
//! without a fourth mail; an unsubscribe after the first mail stops everything for good; a
//! contact without a confirmed opt-in is never enrolled and never mailed; and a scheduler
//! killed in the middle of a batch, then restarted, sends every due mail exactly once.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration as StdDuration,
};

use chrono::{DateTime, Duration, Utc};
use leadflow_bus::{Delivery, EventHandler, envelope::event_type, new_envelope};
use leadflow_nurturing::{
    CLAIM_LEASE, Mailer, Nurturing, NurturingApi, SchedulerReport,
    mail::{MailError, MailTransport, Mailbox, NurtureMail, SmtpSettings, SmtpTransport},
};
use leadflow_platform::{
    links::{LinkClaims, LinkPurpose, LinkSigner, LinkUrls},
    time::{Clock, ManualClock, from_timestamp, to_timestamp},
};
use leadflow_proto::{
    common::v1::{ActivityType, BuyingStage, ContactProfile, LeadClass, LeadProfile},
    events::v1::{
        self as events, ConsentChannel, ConsentState, EventEnvelope, event_envelope::Payload,
    },
    nurturing::v1::{
        ContentItem, ContentKind, CreateContentItemRequest, CreateTemplateRequest,
        CreateTrackRequest, EnrollContactRequest, Enrollment, EnrollmentState,
        GetEnrollmentRequest, GetEnrollmentResponse, ListEnrollmentsRequest, ListSendsRequest,
        MailTemplate, SendState, Track, TrackVersion, nurturing_service_server::NurturingService,
    },
};
use leadflow_storage::ServiceStore;
use leadflow_tests::SmtpSink;
use mail_parser::MessageParser;
use prost::Message;
use tonic::{Code, Request};
use uuid::Uuid;

use crate::{
    contracts::{Backing, postgres, sqlite},
    routing_assign::{on_both_stores, utc},
};

pub(crate) const PRODUCT: &str = "erp";
const PUBLIC_URL: &str = "https://go.example.com";
const LINK_KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
pub(crate) const IT_MANAGER: &str = "it-manager";
pub(crate) const ALTERNATIVE_PREFIX: &str = "Another pick for you: ";

/// Nurturing on a fresh store of one kind, a clock the test moves, and an SMTP sink of its
/// own that every mail goes to.
pub(crate) struct Bench {
    _backing: Backing,
    pub(crate) store: ServiceStore,
    pub(crate) nurturing: Nurturing,
    pub(crate) api: NurturingApi,
    pub(crate) clock: ManualClock,
    pub(crate) links: LinkUrls,
    pub(crate) sink: SmtpSink,
}

/// Monday, 5 January 2026, 09:00 UTC.
pub(crate) fn monday_morning() -> DateTime<Utc> {
    utc(2026, 1, 5, 9, 0, 0)
}

fn links() -> anyhow::Result<LinkUrls> {
    let signer =
        LinkSigner::new(LINK_KEY, &[]).map_err(|error| anyhow::anyhow!("link key: {error:?}"))?;
    Ok(LinkUrls::new(signer, PUBLIC_URL))
}

fn smtp_transport(sink: &SmtpSink) -> anyhow::Result<SmtpTransport> {
    let mut settings = SmtpSettings::plain(sink.host(), sink.port());
    settings.timeout = StdDuration::from_secs(10);
    Ok(SmtpTransport::new(&settings)?)
}

fn mailer(links: &LinkUrls, transport: Arc<dyn MailTransport>) -> anyhow::Result<Mailer> {
    Ok(Mailer {
        from: "Example Marketing <news@mail.example.com>".parse::<Mailbox>()?,
        links: links.clone(),
        transport,
    })
}

pub(crate) async fn bench(postgres_store: bool) -> anyhow::Result<Bench> {
    let (backing, store) = if postgres_store {
        let (backing, database) =
            postgres(leadflow_nurturing::SCHEMA, &leadflow_nurturing::MIGRATOR).await?;
        (backing, ServiceStore::Postgres(database))
    } else {
        let (backing, database) = sqlite(
            leadflow_nurturing::SCHEMA,
            &leadflow_nurturing::SQLITE_MIGRATOR,
        )
        .await?;
        (backing, ServiceStore::Embedded(database))
    };
    let clock = ManualClock::new(monday_morning());
    let sink = SmtpSink::start().await?;
    let links = links()?;
    let nurturing = leadflow_nurturing::nurturing(
        &store,
        Arc::new(clock.clone()),
        mailer(&links, Arc::new(smtp_transport(&sink)?))?,
    );
    Ok(Bench {
        _backing: backing,
        api: NurturingApi::new(nurturing.clone()),
        store,
        nurturing,
        clock,
        links,
        sink,
    })
}

pub(crate) fn key() -> String {
    Uuid::new_v4().to_string()
}

pub(crate) fn sent(count: usize) -> SchedulerReport {
    SchedulerReport {
        sent: count,
        ..SchedulerReport::default()
    }
}

pub(crate) fn time_of(timestamp: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    timestamp.and_then(from_timestamp)
}

/// A contact nurturing heard of from capture.
#[derive(Debug, Clone)]
pub(crate) struct Contact {
    pub(crate) contact_id: String,
    pub(crate) lead_id: String,
    pub(crate) email: String,
}

/// The library and the track the scenarios run on.
pub(crate) struct Library {
    pub(crate) track_id: String,
    pub(crate) offer_template_id: String,
    pub(crate) alternative_template_id: String,
    /// B1 items for IT managers, in the order the engine offers them.
    pub(crate) it_b1: Vec<ContentItem>,
    /// A B1 item for CFOs only, older than every IT-manager item.
    pub(crate) cfo_b1: ContentItem,
    /// A B2 item for IT managers, older than every B1 item for them.
    pub(crate) it_b2: ContentItem,
}

/// One mail the sink accepted, with what its headers and signed links say.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    /// The envelope recipient the relay was told about.
    pub(crate) recipient: String,
    pub(crate) subject: String,
    /// Without angle brackets.
    pub(crate) message_id: String,
    /// The `X-Leadflow-Send-Id` header.
    pub(crate) send_id: String,
    /// Where the tracked link to the item goes, from its signed token.
    pub(crate) item_url: String,
    /// The send the tracked link names.
    pub(crate) click_send_id: Uuid,
    /// The send the open pixel names.
    pub(crate) open_send_id: Uuid,
    /// The one-click unsubscribe link of the `List-Unsubscribe` header.
    pub(crate) unsubscribe: LinkClaims,
}

/// The token of the first `{PUBLIC_URL}{path}?token=` link in `text`.
fn token_in<'a>(text: &'a str, path: &str) -> Option<&'a str> {
    let prefix = format!("{PUBLIC_URL}{path}?token=");
    let start = text.find(&prefix)? + prefix.len();
    let rest = &text[start..];
    let end = rest
        .find(|character: char| {
            !(character.is_ascii_alphanumeric() || matches!(character, '-' | '_' | '.'))
        })
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

impl Bench {
    fn verify(&self, token: &str, purpose: LinkPurpose) -> anyhow::Result<LinkClaims> {
        self.links
            .signer()
            .verify(token, purpose, self.clock.now())
            .map_err(|error| anyhow::anyhow!("a {purpose:?} token of ours: {error:?}"))
    }

    /// Every mail the sink accepted so far, oldest first.
    pub(crate) fn received(&self) -> anyhow::Result<Vec<Received>> {
        self.sink
            .messages()?
            .iter()
            .map(|raw| {
                let message = MessageParser::default()
                    .parse(raw)
                    .ok_or_else(|| anyhow::anyhow!("the sink holds an unparseable message"))?;
                let header = |name: &str| {
                    message
                        .header_raw(name)
                        .map(|value| value.trim().to_owned())
                        .ok_or_else(|| anyhow::anyhow!("a mail without {name}"))
                };
                let text = message
                    .body_text(0)
                    .ok_or_else(|| anyhow::anyhow!("a mail without a text part"))?;
                let html = message
                    .body_html(0)
                    .ok_or_else(|| anyhow::anyhow!("a mail without an HTML part"))?;
                let click = self.verify(
                    token_in(&text, leadflow_platform::links::CLICK_PATH)
                        .ok_or_else(|| anyhow::anyhow!("no tracked link in {text}"))?,
                    LinkPurpose::Click,
                )?;
                let open = self.verify(
                    token_in(&html, leadflow_platform::links::OPEN_PATH)
                        .ok_or_else(|| anyhow::anyhow!("no open pixel in {html}"))?,
                    LinkPurpose::Open,
                )?;
                let list_unsubscribe = header("List-Unsubscribe")?;
                let unsubscribe = self.verify(
                    token_in(
                        &list_unsubscribe,
                        leadflow_platform::links::UNSUBSCRIBE_PATH,
                    )
                    .ok_or_else(|| anyhow::anyhow!("no unsubscribe link in {list_unsubscribe}"))?,
                    LinkPurpose::Unsubscribe,
                )?;
                Ok(Received {
                    recipient: header("X-Sink-Rcpt-To")?
                        .trim_matches(|c| c == '<' || c == '>')
                        .to_owned(),
                    subject: message.subject().unwrap_or_default().to_owned(),
                    message_id: message.message_id().unwrap_or_default().to_owned(),
                    send_id: header("X-Leadflow-Send-Id")?,
                    item_url: click.target_url().unwrap_or_default().to_owned(),
                    click_send_id: click.subject_id(),
                    open_send_id: open.subject_id(),
                    unsubscribe,
                })
            })
            .collect()
    }

    /// The mails the sink accepted for `contact`, oldest first.
    pub(crate) fn received_by(&self, contact: &Contact) -> anyhow::Result<Vec<Received>> {
        Ok(self
            .received()?
            .into_iter()
            .filter(|mail| mail.recipient == contact.email)
            .collect())
    }

    /// Hands one event to nurturing as its consumer would.
    pub(crate) async fn deliver(
        &self,
        producer: &str,
        aggregate_id: &str,
        payload: Payload,
    ) -> anyhow::Result<()> {
        let envelope = new_envelope(producer, aggregate_id, payload, self.clock.now());
        let delivery = Delivery::new(leadflow_nurturing::CONSUMER_GROUP, envelope)
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        let _applied = self
            .nurturing
            .handle(&delivery)
            .await
            .map_err(|error| anyhow::anyhow!("nurturing refused the event: {error}"))?;
        Ok(())
    }

    /// Capture's word that `name` (an IT manager unless `role` says otherwise) of `lead_id`
    /// was captured for the product with `consent`.
    pub(crate) async fn capture_into(
        &self,
        lead_id: &str,
        name: &str,
        role: &str,
        consent: ConsentState,
    ) -> anyhow::Result<Contact> {
        let contact = Contact {
            contact_id: Uuid::now_v7().to_string(),
            lead_id: lead_id.to_owned(),
            email: format!("{name}@buyer.example.com"),
        };
        self.deliver(
            "capture",
            &contact.lead_id,
            Payload::ContactCaptured(events::ContactCaptured {
                contact_id: contact.contact_id.clone(),
                lead_id: contact.lead_id.clone(),
                contact: Some(ContactProfile {
                    email: contact.email.clone(),
                    first_name: name.to_owned(),
                    last_name: "Buyer".to_owned(),
                    buyer_role: role.to_owned(),
                    job_title: "Head of IT".to_owned(),
                    language: "en".to_owned(),
                    ..ContactProfile::default()
                }),
                lead: Some(LeadProfile {
                    company_name: "Example Engines Ltd".to_owned(),
                    ..LeadProfile::default()
                }),
                product: PRODUCT.to_owned(),
                source: "website".to_owned(),
                consent_state: consent.into(),
                contact_created: true,
                lead_created: true,
                ..events::ContactCaptured::default()
            }),
        )
        .await?;
        Ok(contact)
    }

    /// An IT manager of a new lead.
    pub(crate) async fn capture(
        &self,
        name: &str,
        consent: ConsentState,
    ) -> anyhow::Result<Contact> {
        self.capture_into(&Uuid::now_v7().to_string(), name, IT_MANAGER, consent)
            .await
    }

    /// Scoring's word that `lead_id` is now of `class` for the product.
    pub(crate) async fn classify(&self, lead_id: &str, class: LeadClass) -> anyhow::Result<()> {
        self.deliver(
            "scoring",
            lead_id,
            Payload::ClassChanged(events::ClassChanged {
                lead_id: lead_id.to_owned(),
                product: PRODUCT.to_owned(),
                new_class: class.into(),
                reason: "scored".to_owned(),
                ..events::ClassChanged::default()
            }),
        )
        .await
    }

    /// Capture's word that `contact` opened the mail whose open pixel named `send_id`, now.
    pub(crate) async fn open(&self, contact: &Contact, send_id: Uuid) -> anyhow::Result<()> {
        self.deliver(
            "capture",
            &contact.lead_id,
            Payload::ActivityRecorded(events::ActivityRecorded {
                activity_id: Uuid::now_v7().to_string(),
                contact_id: contact.contact_id.clone(),
                lead_id: contact.lead_id.clone(),
                r#type: ActivityType::EmailOpened.into(),
                product: PRODUCT.to_owned(),
                occurred_at: Some(to_timestamp(self.clock.now())),
                source: "email".to_owned(),
                send_id: send_id.to_string(),
                ..events::ActivityRecorded::default()
            }),
        )
        .await
    }

    /// Capture's word that `contact` withdrew its nurture-mail consent.
    pub(crate) async fn unsubscribe(&self, contact: &Contact) -> anyhow::Result<()> {
        self.deliver(
            "capture",
            &contact.lead_id,
            Payload::ConsentChanged(events::ConsentChanged {
                consent_id: Uuid::now_v7().to_string(),
                contact_id: contact.contact_id.clone(),
                lead_id: contact.lead_id.clone(),
                purpose: leadflow_nurturing::NURTURE_PURPOSE.to_owned(),
                previous_state: ConsentState::Confirmed.into(),
                state: ConsentState::Withdrawn.into(),
                wording_version: "2025-11".to_owned(),
                channel: ConsentChannel::ListUnsubscribe.into(),
                form_id: String::new(),
            }),
        )
        .await
    }

    pub(crate) async fn create_item(&self, item: ContentItem) -> anyhow::Result<ContentItem> {
        Ok(self
            .api
            .create_content_item(Request::new(CreateContentItemRequest {
                item: Some(item),
                idempotency_key: key(),
            }))
            .await?
            .into_inner()
            .item
            .expect("item"))
    }

    pub(crate) async fn create_template(
        &self,
        name: &str,
        subject: &str,
    ) -> anyhow::Result<String> {
        Ok(self
            .api
            .create_template(Request::new(CreateTemplateRequest {
                template: Some(MailTemplate {
                    name: name.to_owned(),
                    language: "en".to_owned(),
                    subject: subject.to_owned(),
                    html_body: "<p>Hello {{ contact.first_name }},</p>\n\
                        <p><a href=\"{{ item.url }}\">{{ item.title }}</a></p>\n\
                        <p><a href=\"{{ unsubscribe_url }}\">Unsubscribe</a></p>"
                        .to_owned(),
                    text_body: "Hello {{ contact.first_name }},\n\n\
                        {{ item.title }}:\n{{ item.url }}\n\n\
                        Unsubscribe: {{ unsubscribe_url }}\n"
                        .to_owned(),
                    ..MailTemplate::default()
                }),
                idempotency_key: key(),
            }))
            .await?
            .into_inner()
            .template
            .expect("template")
            .template_id)
    }

    /// The library of the scenarios and a track on the default timing (7-day reaction
    /// window, 21-day cadence, 30-day longest interval, 3 tries) that enrolls B1-leads. The
    /// CFO item and the B2 item are created first, so that they come first in library
    /// order and only the (role, stage) cell keeps them out.
    pub(crate) async fn library(&self) -> anyhow::Result<Library> {
        let item = |title: &str, slug: &str, roles: &[&str], stage: BuyingStage| ContentItem {
            title: title.to_owned(),
            kind: ContentKind::Whitepaper.into(),
            url: format!("https://www.example.com/content/{slug}"),
            summary: format!("{title}, in brief."),
            buyer_roles: roles.iter().map(|role| (*role).to_owned()).collect(),
            stage: stage.into(),
            product: PRODUCT.to_owned(),
            language: "en".to_owned(),
            ..ContentItem::default()
        };
        let cfo_b1 = self
            .create_item(item(
                "What manual planning costs the CFO",
                "cfo-cost-of-planning",
                &["cfo"],
                BuyingStage::ProblemAwareness,
            ))
            .await?;
        let it_b2 = self
            .create_item(item(
                "Comparing ERP architectures",
                "it-erp-architectures",
                &[IT_MANAGER],
                BuyingStage::SolutionSearch,
            ))
            .await?;
        let mut it_b1 = Vec::new();
        for (title, slug) in [
            ("Why spreadsheets break IT", "it-spreadsheets-break"),
            ("Ten signs your ERP is holding IT back", "it-ten-signs"),
            ("The hidden cost of shadow IT", "it-shadow-it"),
        ] {
            it_b1.push(
                self.create_item(item(
                    title,
                    slug,
                    &[IT_MANAGER],
                    BuyingStage::ProblemAwareness,
                ))
                .await?,
            );
        }
        let offer_template_id = self
            .create_template("B1 offer (en)", "{{ item.title }}")
            .await?;
        let alternative_template_id = self
            .create_template(
                "B1 alternative offer (en)",
                &format!("{ALTERNATIVE_PREFIX}{{{{ item.title }}}}"),
            )
            .await?;
        let track_id = self
            .api
            .create_track(Request::new(CreateTrackRequest {
                track: Some(Track {
                    name: "ERP B1 nurture".to_owned(),
                    product: PRODUCT.to_owned(),
                    ..Track::default()
                }),
                first_version: Some(TrackVersion {
                    offer_template_id: offer_template_id.clone(),
                    alternative_offer_template_id: alternative_template_id.clone(),
                    auto_enroll_classes: vec![LeadClass::B1.into()],
                    ..TrackVersion::default()
                }),
                idempotency_key: key(),
            }))
            .await?
            .into_inner()
            .track
            .expect("track")
            .track_id;
        Ok(Library {
            track_id,
            offer_template_id,
            alternative_template_id,
            it_b1,
            cfo_b1,
            it_b2,
        })
    }

    pub(crate) async fn enroll(
        &self,
        contact: &Contact,
        library: &Library,
    ) -> Result<Enrollment, tonic::Status> {
        Ok(self
            .api
            .enroll_contact(Request::new(EnrollContactRequest {
                contact_id: contact.contact_id.clone(),
                track_id: library.track_id.clone(),
                idempotency_key: key(),
                ..EnrollContactRequest::default()
            }))
            .await?
            .into_inner()
            .enrollment
            .expect("enrollment"))
    }

    pub(crate) async fn enrollments_of(
        &self,
        contact: &Contact,
    ) -> anyhow::Result<Vec<Enrollment>> {
        Ok(self
            .api
            .list_enrollments(Request::new(ListEnrollmentsRequest {
                contact_id: contact.contact_id.clone(),
                page_size: 500,
                ..ListEnrollmentsRequest::default()
            }))
            .await?
            .into_inner()
            .enrollments)
    }

    /// The one enrollment of `contact`.
    pub(crate) async fn enrollment_of(&self, contact: &Contact) -> anyhow::Result<Enrollment> {
        let mut enrollments = self.enrollments_of(contact).await?;
        assert_eq!(
            enrollments.len(),
            1,
            "{} has one enrollment: {enrollments:?}",
            contact.email
        );
        Ok(enrollments.remove(0))
    }

    pub(crate) async fn get(&self, enrollment_id: &str) -> anyhow::Result<GetEnrollmentResponse> {
        Ok(self
            .api
            .get_enrollment(Request::new(GetEnrollmentRequest {
                enrollment_id: enrollment_id.to_owned(),
            }))
            .await?
            .into_inner())
    }

    pub(crate) async fn run_due(&self) -> anyhow::Result<SchedulerReport> {
        Ok(self.nurturing.run_due().await?)
    }

    /// Moves the clock on in steps of `step` up to `until`, running the scheduler at every
    /// step and at `until`; it must find nothing to do.
    pub(crate) async fn nothing_happens_until(
        &self,
        until: DateTime<Utc>,
        step: Duration,
    ) -> anyhow::Result<()> {
        while self.clock.now() + step < until {
            self.clock.advance(step);
            let report = self.run_due().await?;
            assert_eq!(
                report,
                SchedulerReport::default(),
                "nothing is due at {}",
                self.clock.now()
            );
        }
        self.clock.set(until);
        let report = self.run_due().await?;
        assert_eq!(
            report,
            SchedulerReport::default(),
            "nothing is due at {until}"
        );
        Ok(())
    }

    /// Nurturing's published events of `payload`'s type, from its outbox.
    pub(crate) async fn published(&self, payload: &Payload) -> anyhow::Result<Vec<EventEnvelope>> {
        let wanted = event_type(payload);
        let rows: Vec<(String, Vec<u8>)> = match &self.store {
            ServiceStore::Postgres(database) => {
                sqlx::query_as("SELECT event_type, envelope FROM outbox ORDER BY seq")
                    .fetch_all(database.pool())
                    .await?
            }
            ServiceStore::Embedded(database) => {
                sqlx::query_as("SELECT event_type, envelope FROM outbox ORDER BY seq")
                    .fetch_all(database.pool())
                    .await?
            }
        };
        rows.iter()
            .filter(|(kind, _)| kind == wanted)
            .map(|(_, envelope)| Ok(EventEnvelope::decode(envelope.as_slice())?))
            .collect()
    }
}

/// The mail of `send` as the sink holds it: addressed to `contact`, carrying the send's
/// Message-ID and send id, offering `item` through links that name the send.
fn assert_mail_of(
    mail: &Received,
    contact: &Contact,
    send: &leadflow_proto::nurturing::v1::Send,
    item: &ContentItem,
    subject: &str,
) {
    assert_eq!(
        mail.recipient, contact.email,
        "the mail went to the contact"
    );
    assert_eq!(mail.subject, subject, "the subject names the item");
    assert_eq!(
        mail.item_url, item.url,
        "the tracked link leads to the item"
    );
    assert_eq!(mail.send_id, send.send_id, "the mail is the recorded send");
    assert_eq!(
        format!("<{}>", mail.message_id),
        send.message_id,
        "the send keeps the mail's Message-ID"
    );
    assert_eq!(mail.click_send_id.to_string(), send.send_id);
    assert_eq!(mail.open_send_id.to_string(), send.send_id);
    assert_eq!(send.content_item_id, item.content_item_id);
    assert_eq!(send.state(), SendState::Sent);
}

async fn an_it_manager_of_a_b1_lead_gets_b1_items_for_it_managers_three_weeks_after_each_reaction(
    bench: Bench,
) -> anyhow::Result<()> {
    let library = bench.library().await?;
    // A lead scoring has not classified yet starts at B1, so the track takes it at once;
    // scoring's B1 confirms the cell and enrolls nothing twice.
    let ada = bench.capture("ada", ConsentState::Confirmed).await?;
    assert_eq!(bench.enrollments_of(&ada).await?.len(), 1);
    bench.classify(&ada.lead_id, LeadClass::B1).await?;
    let enrollment = bench.enrollment_of(&ada).await?;
    assert_eq!(enrollment.state(), EnrollmentState::Active);
    assert_eq!(enrollment.track_id, library.track_id);
    assert_eq!(enrollment.buyer_role, IT_MANAGER);
    assert_eq!(enrollment.stage(), BuyingStage::ProblemAwareness);

    assert_eq!(bench.run_due().await?, sent(1));
    let mails = bench.received()?;
    assert_eq!(mails.len(), 1, "one mail reached the sink");
    let first = bench.get(&enrollment.enrollment_id).await?;
    assert_eq!(first.sends.len(), 1);
    let first_item = &library.it_b1[0];
    assert_mail_of(
        &mails[0],
        &ada,
        &first.sends[0],
        first_item,
        &first_item.title,
    );
    for other in [&library.cfo_b1, &library.it_b2] {
        assert_ne!(first.sends[0].content_item_id, other.content_item_id);
        assert_ne!(mails[0].item_url, other.url);
    }
    assert_eq!(first.sends[0].stage(), BuyingStage::ProblemAwareness);
    assert_eq!(first.sends[0].template_id, library.offer_template_id);
    let state = first.enrollment.expect("enrollment");
    assert_eq!((state.step, state.attempt), (1, 1));

    // Opened the next morning: the open pixel names the send.
    bench.clock.advance(Duration::hours(23));
    let reacted_at = bench.clock.now();
    bench.open(&ada, mails[0].open_send_id).await?;
    let after_open = bench.get(&enrollment.enrollment_id).await?;
    let state = after_open.enrollment.expect("enrollment");
    assert_eq!(time_of(state.last_reaction_time.as_ref()), Some(reacted_at));
    assert_eq!(
        time_of(state.next_due_time.as_ref()),
        Some(reacted_at + Duration::days(21)),
        "the next step is due three weeks after the reaction"
    );
    assert_eq!(after_open.sends[0].open_count, 1);
    assert_eq!(
        time_of(after_open.sends[0].first_open_time.as_ref()),
        Some(reacted_at)
    );

    // Nothing in the three weeks: no alternative offer after the reaction window either.
    bench
        .nothing_happens_until(
            reacted_at + Duration::days(21) - Duration::seconds(1),
            Duration::hours(12),
        )
        .await?;
    assert_eq!(bench.received()?.len(), 1, "nothing before three weeks");

    bench.clock.set(reacted_at + Duration::days(21));
    assert_eq!(bench.run_due().await?, sent(1));
    let mails = bench.received()?;
    assert_eq!(mails.len(), 2);
    let second = bench.get(&enrollment.enrollment_id).await?;
    assert_eq!(second.sends.len(), 2);
    let second_item = &library.it_b1[1];
    assert_ne!(second_item.content_item_id, first_item.content_item_id);
    assert_mail_of(
        &mails[1],
        &ada,
        &second.sends[1],
        second_item,
        &second_item.title,
    );
    assert_ne!(mails[1].message_id, mails[0].message_id);
    assert_eq!(
        time_of(second.sends[1].send_time.as_ref()),
        Some(reacted_at + Duration::days(21))
    );
    assert_eq!(second.sends[1].template_id, library.offer_template_id);
    let state = second.enrollment.expect("enrollment");
    assert_eq!(state.state(), EnrollmentState::Active);
    assert_eq!(
        (state.step, state.attempt),
        (2, 1),
        "the second step's first offer"
    );
    Ok(())
}

async fn a_contact_who_never_reacts_gets_two_alternative_offers_then_the_enrollment_is_exhausted(
    bench: Bench,
) -> anyhow::Result<()> {
    let library = bench.library().await?;
    let bo = bench.capture("bo", ConsentState::Confirmed).await?;
    bench.classify(&bo.lead_id, LeadClass::B1).await?;
    let enrollment = bench.enrollment_of(&bo).await?;
    let start = bench.clock.now();

    assert_eq!(bench.run_due().await?, sent(1));
    for attempt in 2..=3_u32 {
        let due = start + Duration::days(7 * i64::from(attempt - 1));
        bench
            .nothing_happens_until(due - Duration::seconds(1), Duration::days(1))
            .await?;
        bench.clock.set(due);
        assert_eq!(
            bench.run_due().await?,
            sent(1),
            "try {attempt} a reaction window after the one before"
        );
    }
    let exhausted_at = start + Duration::days(21);
    bench
        .nothing_happens_until(exhausted_at - Duration::seconds(1), Duration::days(1))
        .await?;
    bench.clock.set(exhausted_at);
    assert_eq!(
        bench.run_due().await?,
        SchedulerReport {
            exhausted: 1,
            ..SchedulerReport::default()
        },
        "after the third try's window the enrollment ends, without a mail"
    );

    let mails = bench.received()?;
    assert_eq!(mails.len(), 3, "three tries, no fourth mail");
    let record = bench.get(&enrollment.enrollment_id).await?;
    assert_eq!(record.sends.len(), 3);
    for (index, (mail, send)) in mails.iter().zip(&record.sends).enumerate() {
        let item = &library.it_b1[index];
        let attempt = index as u32 + 1;
        let subject = if attempt == 1 {
            item.title.clone()
        } else {
            format!("{ALTERNATIVE_PREFIX}{}", item.title)
        };
        assert_mail_of(mail, &bo, send, item, &subject);
        assert_eq!((send.step, send.attempt), (1, attempt));
        assert_eq!(
            &send.template_id,
            if attempt == 1 {
                &library.offer_template_id
            } else {
                &library.alternative_template_id
            }
        );
        assert_eq!(
            time_of(send.send_time.as_ref()),
            Some(start + Duration::days(7 * i64::from(index as u32)))
        );
    }
    let items: BTreeSet<&str> = record
        .sends
        .iter()
        .map(|send| send.content_item_id.as_str())
        .collect();
    assert_eq!(items.len(), 3, "each try offers another item");
    let state = record.enrollment.expect("enrollment");
    assert_eq!(state.state(), EnrollmentState::Exhausted);
    assert_eq!((state.step, state.attempt), (1, 3));
    assert_eq!(time_of(state.end_time.as_ref()), Some(exhausted_at));
    assert_eq!(state.next_due_time, None);

    let exhausted = bench
        .published(&Payload::NurtureExhausted(
            events::NurtureExhausted::default(),
        ))
        .await?;
    assert_eq!(exhausted.len(), 1, "one NurtureExhausted in the outbox");
    assert_eq!(exhausted[0].producer, leadflow_nurturing::PRODUCER);
    assert_eq!(exhausted[0].aggregate_id, bo.lead_id);
    assert_eq!(
        exhausted[0].payload,
        Some(Payload::NurtureExhausted(events::NurtureExhausted {
            enrollment_id: enrollment.enrollment_id.clone(),
            contact_id: bo.contact_id.clone(),
            lead_id: bo.lead_id.clone(),
            product: PRODUCT.to_owned(),
            track_id: library.track_id.clone(),
            track_version: 1,
            tries: 3,
        }))
    );
    let emails_sent = bench
        .published(&Payload::EmailSent(events::EmailSent::default()))
        .await?;
    assert_eq!(emails_sent.len(), 3, "one EmailSent per mail");

    // Months later, still nothing.
    bench
        .nothing_happens_until(exhausted_at + Duration::days(180), Duration::days(7))
        .await?;
    assert_eq!(bench.received()?.len(), 3);
    assert_eq!(
        bench
            .published(&Payload::NurtureExhausted(
                events::NurtureExhausted::default()
            ))
            .await?
            .len(),
        1
    );
    Ok(())
}

async fn a_contact_who_unsubscribes_after_the_first_mail_gets_nothing_more(
    bench: Bench,
) -> anyhow::Result<()> {
    let library = bench.library().await?;
    let lead_id = Uuid::now_v7().to_string();
    let cleo = bench
        .capture_into(&lead_id, "cleo", IT_MANAGER, ConsentState::Confirmed)
        .await?;
    // A colleague who stays subscribed shows that the scheduler keeps mailing meanwhile.
    let dev = bench
        .capture_into(&lead_id, "dev", IT_MANAGER, ConsentState::Confirmed)
        .await?;
    bench.classify(&lead_id, LeadClass::B1).await?;
    let enrollment = bench.enrollment_of(&cleo).await?;
    assert_eq!(bench.run_due().await?, sent(2));
    let first = bench.received_by(&cleo)?;
    assert_eq!(first.len(), 1);
    let record = bench.get(&enrollment.enrollment_id).await?;
    assert_mail_of(
        &first[0],
        &cleo,
        &record.sends[0],
        &library.it_b1[0],
        &library.it_b1[0].title,
    );

    // The one-click unsubscribe of the mail: capture turns it into a withdrawal.
    let link = &first[0].unsubscribe;
    assert_eq!(link.contact_id().to_string(), cleo.contact_id);
    assert_eq!(link.subject_id().to_string(), record.sends[0].send_id);
    assert_eq!(link.consent_purpose(), leadflow_nurturing::NURTURE_PURPOSE);
    bench.clock.advance(Duration::hours(2));
    bench.unsubscribe(&cleo).await?;
    let stopped_at = bench.clock.now();
    let record = bench.get(&enrollment.enrollment_id).await?;
    let state = record.enrollment.expect("enrollment");
    assert_eq!(state.state(), EnrollmentState::Stopped);
    assert_eq!(time_of(state.end_time.as_ref()), Some(stopped_at));
    assert_eq!(state.next_due_time, None);

    // Months pass with the scheduler running every day.
    let mut reports = Vec::new();
    for _ in 0..180 {
        bench.clock.advance(Duration::days(1));
        reports.push(bench.run_due().await?);
    }
    assert_eq!(
        bench.received_by(&cleo)?.len(),
        1,
        "exactly one mail for the contact who unsubscribed"
    );
    assert_eq!(
        bench.received_by(&dev)?.len(),
        3,
        "the colleague got its alternative offers meanwhile"
    );
    assert_eq!(reports.iter().map(|report| report.sent).sum::<usize>(), 2);
    let record = bench.get(&enrollment.enrollment_id).await?;
    assert_eq!(
        record.enrollment.expect("enrollment").state(),
        EnrollmentState::Stopped
    );
    assert_eq!(record.sends.len(), 1);
    let sends = bench
        .api
        .list_sends(Request::new(ListSendsRequest {
            contact_id: cleo.contact_id.clone(),
            ..ListSendsRequest::default()
        }))
        .await?
        .into_inner()
        .sends;
    assert_eq!(sends.len(), 1);
    let again = bench
        .enroll(&cleo, &library)
        .await
        .expect_err("an unsubscribed contact cannot be enrolled");
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    assert_eq!(bench.received_by(&cleo)?.len(), 1);
    Ok(())
}

async fn a_contact_without_confirmed_opt_in_gets_nothing(bench: Bench) -> anyhow::Result<()> {
    let library = bench.library().await?;
    let lead_id = Uuid::now_v7().to_string();
    // Ticked the box but never followed the confirmation link.
    let finn = bench
        .capture_into(&lead_id, "finn", IT_MANAGER, ConsentState::Granted)
        .await?;
    bench.classify(&lead_id, LeadClass::B1).await?;
    assert!(
        bench.enrollments_of(&finn).await?.is_empty(),
        "no auto-enrollment without a confirmed opt-in"
    );
    let refused = bench
        .enroll(&finn, &library)
        .await
        .expect_err("no enrollment by hand either");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(bench.enrollments_of(&finn).await?.is_empty());

    let start = bench.clock.now();
    bench
        .nothing_happens_until(start + Duration::days(60), Duration::days(1))
        .await?;
    assert!(bench.received()?.is_empty(), "no mail reached the sink");

    // A confirmed colleague in the same B1-lead is enrolled and mailed; the other is not.
    let gus = bench
        .capture_into(&lead_id, "gus", IT_MANAGER, ConsentState::Confirmed)
        .await?;
    assert_eq!(
        bench.enrollment_of(&gus).await?.state(),
        EnrollmentState::Active
    );
    assert_eq!(bench.run_due().await?, sent(1));
    let mails = bench.received()?;
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].recipient, gus.email);
    assert!(bench.received_by(&finn)?.is_empty());
    assert!(bench.enrollments_of(&finn).await?.is_empty());
    Ok(())
}

/// Delivers through the sink until `limit` mails went through, then hangs on the next one
/// for ever, as a worker does that dies while talking to the relay.
#[derive(Debug)]
struct StallingTransport {
    inner: SmtpTransport,
    limit: usize,
    delivered: AtomicUsize,
    stalled: AtomicBool,
    stalled_on: Mutex<Option<Uuid>>,
}

impl StallingTransport {
    fn stalled_on(&self) -> Option<Uuid> {
        if !self.stalled.load(Ordering::SeqCst) {
            return None;
        }
        *self.stalled_on.lock().expect("the stalled send")
    }
}

#[async_trait::async_trait]
impl MailTransport for StallingTransport {
    async fn send(&self, mail: &NurtureMail) -> Result<(), MailError> {
        if self.delivered.load(Ordering::SeqCst) >= self.limit {
            *self.stalled_on.lock().expect("the stalled send") = Some(mail.send_id);
            self.stalled.store(true, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        self.inner.send(mail).await?;
        self.delivered.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

async fn a_scheduler_killed_mid_batch_sends_every_due_mail_exactly_once_after_restart(
    bench: Bench,
) -> anyhow::Result<()> {
    const CONTACTS: usize = 12;
    const BEFORE_THE_KILL: usize = 5;
    let library = bench.library().await?;
    let mut contacts = Vec::new();
    let mut enrollments = BTreeMap::new();
    for index in 0..CONTACTS {
        let contact = bench
            .capture(&format!("contact{index:02}"), ConsentState::Confirmed)
            .await?;
        // Enrolled automatically: the track takes B1-leads, and a lead not classified yet
        // counts as one.
        let enrollment = bench.enrollment_of(&contact).await?;
        enrollments.insert(contact.email.clone(), enrollment.enrollment_id);
        contacts.push(contact);
    }

    let stalling = Arc::new(StallingTransport {
        inner: smtp_transport(&bench.sink)?,
        limit: BEFORE_THE_KILL,
        delivered: AtomicUsize::new(0),
        stalled: AtomicBool::new(false),
        stalled_on: Mutex::new(None),
    });
    let doomed = leadflow_nurturing::nurturing(
        &bench.store,
        Arc::new(bench.clock.clone()),
        mailer(&bench.links, stalling.clone())?,
    );
    let worker = tokio::spawn(async move { doomed.run_due().await });
    let deadline = tokio::time::Instant::now() + StdDuration::from_secs(60);
    let stalled_on = loop {
        if let Some(send_id) = stalling.stalled_on()
            && bench.sink.messages()?.len() >= BEFORE_THE_KILL
        {
            break send_id;
        }
        anyhow::ensure!(
            !worker.is_finished(),
            "the scheduler pass ended before it stalled: {:?}",
            worker.await
        );
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the scheduler did not stall within 60 s"
        );
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    };
    // The kill, in the middle of the batch.
    worker.abort();
    let killed = worker.await;
    assert!(
        killed.as_ref().is_err_and(|error| error.is_cancelled()),
        "{killed:?}"
    );
    assert_eq!(bench.sink.messages()?.len(), BEFORE_THE_KILL);

    // What the dead worker left: five sent, one claimed, six untouched.
    let mut states = BTreeMap::new();
    for enrollment_id in enrollments.values() {
        let record = bench.get(enrollment_id).await?;
        let sends: Vec<SendState> = record.sends.iter().map(|send| send.state()).collect();
        *states.entry(sends).or_insert(0) += 1;
        if let Some(pending) = record
            .sends
            .iter()
            .find(|send| send.state() == SendState::Pending)
        {
            assert_eq!(pending.send_id, stalled_on.to_string());
        }
    }
    assert_eq!(
        states,
        BTreeMap::from([
            (Vec::new(), CONTACTS - BEFORE_THE_KILL - 1),
            (vec![SendState::Sent], BEFORE_THE_KILL),
            (vec![SendState::Pending], 1),
        ])
    );

    // The restart: a fresh engine on the same store, delivering straight to the sink.
    let restarted = leadflow_nurturing::nurturing(
        &bench.store,
        Arc::new(bench.clock.clone()),
        mailer(&bench.links, Arc::new(smtp_transport(&bench.sink)?))?,
    );
    assert_eq!(
        restarted.run_due().await?,
        sent(CONTACTS - BEFORE_THE_KILL - 1),
        "the untouched enrollments go at once; the claimed one waits for its lease"
    );
    bench.clock.advance(CLAIM_LEASE + Duration::minutes(1));
    let mut total = SchedulerReport::default();
    for pass in 0.. {
        anyhow::ensure!(pass < 10, "the scheduler still finds work after 10 passes");
        let report = restarted.run_due().await?;
        if report == SchedulerReport::default() {
            break;
        }
        total.sent += report.sent;
        total.failed += report.failed;
        total.deferred += report.deferred;
        total.stopped += report.stopped;
        total.flagged += report.flagged;
        total.exhausted += report.exhausted;
    }
    assert_eq!(
        total,
        sent(1),
        "the claimed mail goes once its lease lapsed"
    );

    let mails = bench.received()?;
    assert_eq!(mails.len(), CONTACTS, "one mail per contact");
    let recipients: BTreeSet<&str> = mails.iter().map(|mail| mail.recipient.as_str()).collect();
    let expected: BTreeSet<&str> = contacts
        .iter()
        .map(|contact| contact.email.as_str())
        .collect();
    assert_eq!(recipients, expected, "every contact, none twice");
    let message_ids: BTreeSet<&str> = mails.iter().map(|mail| mail.message_id.as_str()).collect();
    assert_eq!(message_ids.len(), CONTACTS, "no Message-ID twice");
    let send_ids: BTreeSet<&str> = mails.iter().map(|mail| mail.send_id.as_str()).collect();
    assert_eq!(send_ids.len(), CONTACTS, "no send id twice");
    assert!(
        send_ids.contains(stalled_on.to_string().as_str()),
        "the claimed send went out as itself"
    );
    for contact in &contacts {
        let record = bench.get(&enrollments[&contact.email]).await?;
        assert_eq!(record.sends.len(), 1, "{}: one send", contact.email);
        let mail = mails
            .iter()
            .find(|mail| mail.recipient == contact.email)
            .expect("the contact's mail");
        assert_mail_of(
            mail,
            contact,
            &record.sends[0],
            &library.it_b1[0],
            &library.it_b1[0].title,
        );
        let state = record.enrollment.expect("enrollment");
        assert_eq!(state.state(), EnrollmentState::Active);
        assert_eq!((state.step, state.attempt), (1, 1));
    }
    assert_eq!(
        bench
            .published(&Payload::EmailSent(events::EmailSent::default()))
            .await?
            .len(),
        CONTACTS,
        "one EmailSent per mail"
    );
    Ok(())
}

on_both_stores!(
    an_it_manager_of_a_b1_lead_gets_b1_items_for_it_managers_three_weeks_after_each_reaction,
    a_contact_who_never_reacts_gets_two_alternative_offers_then_the_enrollment_is_exhausted,
    a_contact_who_unsubscribes_after_the_first_mail_gets_nothing_more,
    a_contact_without_confirmed_opt_in_gets_nothing,
    a_scheduler_killed_mid_batch_sends_every_due_mail_exactly_once_after_restart,
);
