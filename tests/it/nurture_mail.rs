//! Nurture mail end to end: a template rendered with merge fields and sent through a real
//! SMTP server (aiosmtpd, started per test) or into a directory of .eml files; templates
//! naming unknown fields refused by name; refusals reported as permanent or transient.

use std::time::Duration;

use leadflow_nurturing::mail::{
    ContactFields, EmlDirectory, ItemFields, LeadFields, MailError, MailTemplate, MailTransport,
    Mailbox, MergeFields, NurtureMail, SmtpSettings, SmtpTransport, TemplatePart, validate,
};
use leadflow_tests::SmtpSink;
use mail_parser::{MessageParser, MimeHeaders};
use uuid::Uuid;

const SUBJECT: &str = "{{ contact.first_name }}, {{ item.title }} for {{ lead.company_name }}";

const HTML_BODY: &str = r#"<p>Hello {{ contact.first_name }} {{ contact.last_name }},</p>
<p>as {{ contact.job_title }} you may like our {{ item.kind }}:
<a href="{{ item.url }}">{{ item.title }}</a></p>
<p>{{ item.summary }}</p>
<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>
<img src="{{ open_pixel_url }}" width="1" height="1" alt="">"#;

const TEXT_BODY: &str = "Hello {{ contact.first_name }} {{ contact.last_name }},

as {{ contact.job_title }} you may like our {{ item.kind }}: {{ item.title }}
{{ item.url }}

{{ item.summary }}

Unsubscribe: {{ unsubscribe_url }}
";

/// A contact whose name is markup, so that escaping shows.
fn fields() -> MergeFields {
    MergeFields {
        contact: ContactFields {
            first_name: "<script>alert(1)</script>".to_owned(),
            last_name: "O'Hara & Sons".to_owned(),
            email: "buyer@example.com".to_owned(),
            job_title: "Head of IT".to_owned(),
        },
        lead: LeadFields {
            company_name: "Example Engines Ltd".to_owned(),
        },
        item: ItemFields {
            title: "Study: the cost of manual planning".to_owned(),
            url: "https://go.example.com/l/abc123?s=1&t=2".to_owned(),
            summary: "What planning by spreadsheet costs a plant.".to_owned(),
            kind: "study".to_owned(),
        },
        unsubscribe_url: "https://go.example.com/u/tok3n".to_owned(),
        open_pixel_url: "https://go.example.com/o/px1".to_owned(),
    }
}

fn mailbox(address: &str) -> Mailbox {
    address.parse().expect("a valid test mailbox")
}

fn nurture_mail(to: &str) -> anyhow::Result<NurtureMail> {
    let template = MailTemplate::compile(SUBJECT, HTML_BODY, TEXT_BODY)?;
    let rendered = template.render(&fields())?;
    Ok(NurtureMail::new(
        Uuid::now_v7(),
        mailbox("Example Marketing <news@mail.example.com>"),
        mailbox(to),
        rendered,
        "https://go.example.com/u/tok3n".to_owned(),
    ))
}

fn transport_to(sink: &SmtpSink) -> anyhow::Result<SmtpTransport> {
    let mut settings = SmtpSettings::plain(sink.host(), sink.port());
    settings.timeout = Duration::from_secs(10);
    Ok(SmtpTransport::new(&settings)?)
}

/// A directory of the test's own, removed when the test ends.
struct TemporaryDirectory(std::path::PathBuf);

impl TemporaryDirectory {
    fn new() -> Self {
        Self(std::env::temp_dir().join(format!("leadflow-eml-{}", Uuid::new_v4().simple())))
    }
}

impl Drop for TemporaryDirectory {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn raw_header<'a>(message: &'a mail_parser::Message<'a>, name: &'static str) -> Option<&'a str> {
    message.header_raw(name).map(str::trim)
}

#[tokio::test]
async fn a_rendered_mail_reaches_the_relay_with_both_parts_and_the_unsubscribe_headers()
-> anyhow::Result<()> {
    let sink = SmtpSink::start().await?;
    let mail = nurture_mail("Buyer <buyer@example.com>")?;

    transport_to(&sink)?.send(&mail).await?;

    let received = sink.messages()?;
    assert_eq!(received.len(), 1, "one mail reached the sink");
    let message = MessageParser::default()
        .parse(&received[0])
        .expect("the sink received a parseable message");
    assert_eq!(
        raw_header(&message, "X-Sink-Rcpt-To"),
        Some("<buyer@example.com>"),
        "the envelope named the contact"
    );
    assert_eq!(
        message.subject(),
        Some(
            "<script>alert(1)</script>, Study: the cost of manual planning for Example Engines Ltd"
        ),
        "the subject is filled and not escaped"
    );
    assert_eq!(
        message.from().and_then(|from| from.first()?.address()),
        Some("news@mail.example.com")
    );
    assert_eq!(
        message.to().and_then(|to| to.first()?.address()),
        Some("buyer@example.com")
    );
    assert_eq!(
        message.message_id(),
        Some(format!("{}@mail.example.com", mail.send_id).as_str()),
        "the message id is made from the send id"
    );
    assert_eq!(
        raw_header(&message, "List-Unsubscribe"),
        Some("<https://go.example.com/u/tok3n>")
    );
    assert_eq!(
        raw_header(&message, "List-Unsubscribe-Post"),
        Some("List-Unsubscribe=One-Click")
    );
    let send_id = mail.send_id.to_string();
    assert_eq!(
        raw_header(&message, "X-Leadflow-Send-Id"),
        Some(send_id.as_str())
    );

    let content_type = message.content_type().expect("a content type");
    assert_eq!(
        (content_type.ctype(), content_type.subtype()),
        ("multipart", Some("alternative"))
    );
    assert_eq!(message.text_body_count(), 1, "one text part");
    assert_eq!(message.html_body_count(), 1, "one HTML part");

    let html = message.body_html(0).expect("an HTML part");
    assert!(
        html.contains("Hello &lt;script&gt;alert(1)&lt;/script&gt; O&#x27;Hara &amp; Sons,"),
        "the HTML part escapes the contact's name: {html}"
    );
    assert!(
        !html.contains("<script>"),
        "no markup from merge fields: {html}"
    );
    assert!(
        html.contains(r#"<a href="https://go.example.com/l/abc123?s=1&amp;t=2">"#),
        "the tracked link, escaped as an attribute and nothing more: {html}"
    );
    assert!(
        html.contains(r#"<img src="https://go.example.com/o/px1""#),
        "{html}"
    );
    assert!(
        html.contains("as Head of IT you may like our study"),
        "{html}"
    );

    // SMTP carries lines ending in CRLF, whatever the template had.
    let text = message
        .body_text(0)
        .expect("a text part")
        .replace("\r\n", "\n");
    assert!(
        text.contains("Hello <script>alert(1)</script> O'Hara & Sons,"),
        "the text part is not escaped: {text}"
    );
    assert!(
        text.contains(
            "study: Study: the cost of manual planning\nhttps://go.example.com/l/abc123?s=1&t=2"
        ),
        "{text}"
    );
    assert!(
        text.contains("Unsubscribe: https://go.example.com/u/tok3n"),
        "{text}"
    );
    assert!(!text.contains("{{"), "every merge field is filled: {text}");
    Ok(())
}

#[tokio::test]
async fn eml_directory_keeps_one_parseable_mail_per_send_id_even_when_sent_twice()
-> anyhow::Result<()> {
    let directory = TemporaryDirectory::new();
    let transport = EmlDirectory::new(&directory.0);
    let first = nurture_mail("buyer@example.com")?;
    let second = nurture_mail("other@example.com")?;

    transport.send(&first).await?;
    transport.send(&first).await?;
    transport.send(&second).await?;

    let mut names: Vec<String> = std::fs::read_dir(&directory.0)?
        .map(|entry| Ok(entry?.file_name().to_string_lossy().into_owned()))
        .collect::<anyhow::Result<_>>()?;
    names.sort();
    let mut expected = vec![
        format!("{}.eml", first.send_id),
        format!("{}.eml", second.send_id),
    ];
    expected.sort();
    assert_eq!(
        names, expected,
        "one file per send id and no temporary files"
    );

    let raw = std::fs::read(transport.path_of(first.send_id))?;
    let message = MessageParser::default()
        .parse(&raw)
        .expect("the .eml parses as a message");
    let send_id = first.send_id.to_string();
    assert_eq!(
        raw_header(&message, "X-Leadflow-Send-Id"),
        Some(send_id.as_str())
    );
    assert_eq!(
        message.to().and_then(|to| to.first()?.address()),
        Some("buyer@example.com")
    );
    assert!(
        message
            .body_html(0)
            .is_some_and(|html| html.contains("&lt;script&gt;"))
    );
    assert!(
        message
            .body_text(0)
            .is_some_and(|text| text.contains("<script>"))
    );
    Ok(())
}

#[tokio::test]
async fn a_template_naming_an_unknown_merge_field_is_refused_naming_it() -> anyhow::Result<()> {
    let errors = MailTemplate::compile(
        "Hi {{ contact.nickname }}",
        "<p>{{ lead.revenue | upper }} and {{ contact.first_name }}</p>",
        "{{ cta_url }}",
    )
    .expect_err("unknown fields are refused");
    assert_eq!(
        errors.unknown_fields(),
        vec!["contact.nickname", "lead.revenue", "cta_url"]
    );
    let parts: Vec<TemplatePart> = errors.errors().iter().map(|error| error.part()).collect();
    assert_eq!(
        parts,
        vec![
            TemplatePart::Subject,
            TemplatePart::HtmlBody,
            TemplatePart::TextBody
        ]
    );
    let message = errors.to_string();
    assert!(
        message.contains("subject names the unknown merge field contact.nickname"),
        "{message}"
    );

    let refused = validate(SUBJECT, HTML_BODY, "{{ item.link }}").expect_err("refused");
    assert_eq!(refused.unknown_fields(), vec!["item.link"]);

    let syntax = validate("{{ contact.first_name ", HTML_BODY, TEXT_BODY).expect_err("refused");
    assert_eq!(syntax.errors().len(), 1);
    assert_eq!(syntax.errors()[0].part(), TemplatePart::Subject);

    let filter = validate(SUBJECT, "{{ item.title | no_such_filter }}", TEXT_BODY)
        .expect_err("an unknown filter fails the sample render");
    assert_eq!(filter.errors()[0].part(), TemplatePart::HtmlBody);

    validate(SUBJECT, HTML_BODY, TEXT_BODY)?;
    validate(
        "{{ contact.first_name | default('there') | title }}",
        "{% for value in [item.kind, item.title] %}{{ loop.index }}. {{ value }} {% endfor %}",
        "{% set greeting = 'Hello' %}{{ greeting }} {{ contact.email }}",
    )
    .map_err(|errors| anyhow::anyhow!("filters, loops and locals pass: {errors}"))?;
    Ok(())
}

#[tokio::test]
async fn refusals_are_reported_as_permanent_or_transient() -> anyhow::Result<()> {
    let sink = SmtpSink::start().await?;
    let transport = transport_to(&sink)?;

    let refused = transport
        .send(&nurture_mail("refused@example.com")?)
        .await
        .expect_err("the sink refuses this recipient");
    assert!(refused.is_permanent(), "550 is for good: {refused}");
    assert!(
        matches!(&refused, MailError::Rejected { code, .. } if code == "550"),
        "{refused:?}"
    );
    assert!(
        refused.to_string().contains("mailbox unavailable"),
        "the relay's words are kept: {refused}"
    );

    let busy = transport
        .send(&nurture_mail("busy@example.com")?)
        .await
        .expect_err("the sink defers this recipient");
    assert!(busy.is_transient(), "451 is for later: {busy}");

    assert!(sink.messages()?.is_empty(), "nothing was accepted");

    // A relay that is not there: nobody listens on a port we bound and let go.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let nowhere = SmtpTransport::new(&SmtpSettings::plain("127.0.0.1", closed_port))?;
    let unreachable = nowhere
        .send(&nurture_mail("buyer@example.com")?)
        .await
        .expect_err("nothing listens there");
    assert!(
        unreachable.is_transient(),
        "an unreachable relay is for later: {unreachable}"
    );
    Ok(())
}
