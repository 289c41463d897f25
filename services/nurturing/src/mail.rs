//! Nurture mail: a template with merge fields rendered into a mail, the MIME message it
//! becomes, and the transports that send it (an SMTP relay in production, `.eml` files in
//! a directory when the suite runs embedded).

use std::{
    collections::BTreeSet,
    fmt,
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

use async_trait::async_trait;
use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{
        MultiPart,
        header::{HeaderName, HeaderValue},
    },
    transport::smtp::{
        authentication::Credentials,
        client::{Tls, TlsParameters},
        extension::ClientId,
    },
};
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use uuid::Uuid;

pub use lettre::message::Mailbox;

/// Every merge field a nurture mail template may name.
pub const MERGE_FIELDS: [&str; 11] = [
    "contact.first_name",
    "contact.last_name",
    "contact.email",
    "contact.job_title",
    "lead.company_name",
    "item.title",
    "item.url",
    "item.summary",
    "item.kind",
    "unsubscribe_url",
    "open_pixel_url",
];

/// The objects that group merge fields: a template may hand one whole to a filter or a
/// loop, and the strict sample render then decides whether that works.
const MERGE_OBJECTS: [&str; 3] = ["contact", "lead", "item"];

/// One of the three templates of a nurture mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TemplatePart {
    Subject,
    HtmlBody,
    TextBody,
}

impl TemplatePart {
    /// The part's name as a request field would carry it, which is also the name it is
    /// compiled under, so minijinja's messages point at it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Subject => "subject",
            Self::HtmlBody => "html_body",
            Self::TextBody => "text_body",
        }
    }
}

impl fmt::Display for TemplatePart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a template part was refused or could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The part is not a valid template.
    #[error("{part} is not a valid template: {message}")]
    Syntax { part: TemplatePart, message: String },
    /// The part names a merge field that does not exist.
    #[error("{part} names the unknown merge field {field}")]
    UnknownField { part: TemplatePart, field: String },
    /// The part compiles and names only known fields but fails when rendered, e.g. an
    /// unknown filter or a field looked up by an index that does not exist.
    #[error("{part} cannot be rendered: {message}")]
    Render { part: TemplatePart, message: String },
}

impl TemplateError {
    /// The part the error is in.
    pub fn part(&self) -> TemplatePart {
        match self {
            Self::Syntax { part, .. }
            | Self::UnknownField { part, .. }
            | Self::Render { part, .. } => *part,
        }
    }

    /// The unknown merge field, when that is what is wrong.
    pub fn unknown_field(&self) -> Option<&str> {
        match self {
            Self::UnknownField { field, .. } => Some(field),
            _ => None,
        }
    }

    fn render_failed(part: TemplatePart, error: &minijinja::Error) -> Self {
        Self::Render {
            part,
            message: error.to_string(),
        }
    }
}

/// Everything wrong with a template, across its three parts, so that an API can name
/// every offending field in one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateErrors(Vec<TemplateError>);

impl TemplateErrors {
    /// The errors, subject first, then the HTML body, then the text body.
    pub fn errors(&self) -> &[TemplateError] {
        &self.0
    }

    /// The unknown merge fields named anywhere in the template.
    pub fn unknown_fields(&self) -> Vec<&str> {
        self.0
            .iter()
            .filter_map(TemplateError::unknown_field)
            .collect()
    }
}

impl fmt::Display for TemplateErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for TemplateErrors {}

/// The values a template's merge fields are filled from. A missing value is an empty
/// string, never absent: the templates are strict, and a contact without a job title must
/// not fail the send.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MergeFields {
    pub contact: ContactFields,
    pub lead: LeadFields,
    pub item: ItemFields,
    pub unsubscribe_url: String,
    pub open_pixel_url: String,
}

/// The contact the mail goes to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ContactFields {
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub job_title: String,
}

/// The lead the contact belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LeadFields {
    pub company_name: String,
}

/// The content item the mail offers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ItemFields {
    pub title: String,
    /// The tracked link to the item, not its raw URL, so that a click counts.
    pub url: String,
    pub summary: String,
    pub kind: String,
}

impl MergeFields {
    /// Plausible values for every field, which templates are checked against.
    pub fn sample() -> Self {
        Self {
            contact: ContactFields {
                first_name: "Ada".to_owned(),
                last_name: "Lovelace".to_owned(),
                email: "ada@example.com".to_owned(),
                job_title: "Head of IT".to_owned(),
            },
            lead: LeadFields {
                company_name: "Example Engines Ltd".to_owned(),
            },
            item: ItemFields {
                title: "Study: the cost of manual planning".to_owned(),
                url: "https://go.example.com/l/sample".to_owned(),
                summary: "What planning by spreadsheet costs a mid-sized plant.".to_owned(),
                kind: "study".to_owned(),
            },
            unsubscribe_url: "https://go.example.com/u/sample".to_owned(),
            open_pixel_url: "https://go.example.com/o/sample".to_owned(),
        }
    }
}

/// A nurture mail template compiled from its three parts: the HTML body auto-escaped,
/// subject and text body not, every variable strict.
#[derive(Debug)]
pub struct MailTemplate {
    environment: Environment<'static>,
}

/// The three parts of a rendered template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedMail {
    pub subject: String,
    pub html: String,
    pub text: String,
}

impl MailTemplate {
    /// Compiles the three parts and checks them against the merge fields; refuses a
    /// template that does not compile, names an unknown field, or fails on sample values.
    pub fn compile(
        subject: &str,
        html_body: &str,
        text_body: &str,
    ) -> Result<Self, TemplateErrors> {
        let mut environment = Environment::new();
        // Strict: a misspelt field must be an error, not an empty spot in a mail that
        // went to ten thousand people.
        environment.set_undefined_behavior(UndefinedBehavior::Strict);
        // Only the HTML body is escaped: a contact called `<b>` must not turn bold in the
        // HTML part, nor read `&lt;b&gt;` in the subject or the text part.
        environment.set_auto_escape_callback(|name| {
            if name == TemplatePart::HtmlBody.as_str() {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        // minijinja's HTML escaping also turns `/` into `&#x2f;`, which no spot in a mail
        // body needs and which turns every link into entity soup that spam filters read as
        // obfuscation. The five characters that matter are escaped, nothing else.
        environment.set_formatter(|out, state, value| match value.as_str() {
            Some(text) if state.auto_escape() == AutoEscape::Html && !value.is_safe() => {
                Ok(out.write_str(&escape_html(text))?)
            }
            _ => minijinja::escape_formatter(out, state, value),
        });
        let mut errors = Vec::new();
        for (part, source) in [
            (TemplatePart::Subject, subject),
            (TemplatePart::HtmlBody, html_body),
            (TemplatePart::TextBody, text_body),
        ] {
            if let Err(error) = environment.add_template_owned(part.as_str(), source.to_owned()) {
                errors.push(TemplateError::Syntax {
                    part,
                    message: error.to_string(),
                });
            }
        }
        if !errors.is_empty() {
            return Err(TemplateErrors(errors));
        }
        let template = Self { environment };
        template.check_fields()?;
        Ok(template)
    }

    /// Renders the mail for one contact. A template that passed [`MailTemplate::compile`]
    /// fails here only on values that make a filter fail.
    pub fn render(&self, fields: &MergeFields) -> Result<RenderedMail, TemplateError> {
        let subject = self.render_part(TemplatePart::Subject, fields)?;
        Ok(RenderedMail {
            // A header cannot carry line breaks, and a subject template written over two
            // lines or ending in a newline means one line.
            subject: subject.split_whitespace().collect::<Vec<_>>().join(" "),
            html: self.render_part(TemplatePart::HtmlBody, fields)?,
            text: self.render_part(TemplatePart::TextBody, fields)?,
        })
    }

    fn render_part(
        &self,
        part: TemplatePart,
        fields: &MergeFields,
    ) -> Result<String, TemplateError> {
        self.environment
            .get_template(part.as_str())
            .and_then(|template| template.render(fields))
            .map_err(|error| TemplateError::render_failed(part, &error))
    }

    /// The merge fields and merge objects the three parts name, sorted and each once: what
    /// a stored template lists so that an operator sees what it needs without reading it.
    pub fn merge_fields(&self) -> Vec<String> {
        let mut named = BTreeSet::new();
        for part in [
            TemplatePart::Subject,
            TemplatePart::HtmlBody,
            TemplatePart::TextBody,
        ] {
            if let Ok(template) = self.environment.get_template(part.as_str()) {
                named.extend(
                    template
                        .undeclared_variables(true)
                        .into_iter()
                        // Globals such as `range` are functions, not merge fields.
                        .filter(|name| {
                            MERGE_FIELDS.contains(&name.as_str())
                                || MERGE_OBJECTS.contains(&name.as_str())
                        }),
                );
            }
        }
        named.into_iter().collect()
    }

    /// Names every unknown field statically, which the strict render alone cannot: it
    /// stops at the first, and says only "undefined value". Then renders with sample
    /// values to catch what static analysis cannot see.
    fn check_fields(&self) -> Result<(), TemplateErrors> {
        let globals: BTreeSet<&str> = self.environment.globals().map(|(name, _)| name).collect();
        let sample = MergeFields::sample();
        let mut errors = Vec::new();
        for part in [
            TemplatePart::Subject,
            TemplatePart::HtmlBody,
            TemplatePart::TextBody,
        ] {
            let template = match self.environment.get_template(part.as_str()) {
                Ok(template) => template,
                Err(error) => {
                    errors.push(TemplateError::render_failed(part, &error));
                    continue;
                }
            };
            // Sorted, so the errors come out the same way every time.
            let named: BTreeSet<String> = template.undeclared_variables(true).into_iter().collect();
            let unknown: Vec<String> = named
                .into_iter()
                .filter(|name| {
                    let root = name.split('.').next().unwrap_or(name);
                    !(MERGE_FIELDS.contains(&name.as_str())
                        || MERGE_OBJECTS.contains(&name.as_str())
                        || globals.contains(root))
                })
                .collect();
            if unknown.is_empty() {
                if let Err(error) = template.render(&sample) {
                    errors.push(TemplateError::render_failed(part, &error));
                }
            } else {
                errors.extend(
                    unknown
                        .into_iter()
                        .map(|field| TemplateError::UnknownField { part, field }),
                );
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(TemplateErrors(errors))
        }
    }
}

/// `text` safe in HTML text and in quoted attribute values.
fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#x27;"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// Checks a template's three parts against the merge fields without keeping it: what an
/// API calls before it stores a template.
pub fn validate(subject: &str, html_body: &str, text_body: &str) -> Result<(), TemplateErrors> {
    MailTemplate::compile(subject, html_body, text_body).map(|_| ())
}

/// One nurture mail, rendered and addressed, ready for a transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NurtureMail {
    /// The send this mail is; a transport delivers each send id at most once where it can
    /// tell, and carries it in `X-Leadflow-Send-Id`.
    pub send_id: Uuid,
    pub from: Mailbox,
    pub to: Mailbox,
    pub subject: String,
    pub html: String,
    pub text: String,
    /// With its angle brackets, e.g. `<0190...@example.com>`.
    pub message_id: String,
    /// The one-click unsubscribe URL (RFC 8058), which receives a POST.
    pub list_unsubscribe: String,
}

/// Where a mail client's unsubscribe button goes (RFC 2369).
pub const LIST_UNSUBSCRIBE: &str = "List-Unsubscribe";
/// Says the unsubscribe URL takes a one-click POST (RFC 8058), which large mailbox
/// providers require of bulk senders.
pub const LIST_UNSUBSCRIBE_POST: &str = "List-Unsubscribe-Post";
/// The send a mail is, so that bounces and replies can be traced back to it.
pub const SEND_ID_HEADER: &str = "X-Leadflow-Send-Id";

impl NurtureMail {
    /// A mail from a rendered template, its Message-ID made from the send id and the
    /// sender's domain, so that a retried send carries the same Message-ID and receivers
    /// can tell it is the same mail.
    pub fn new(
        send_id: Uuid,
        from: Mailbox,
        to: Mailbox,
        rendered: RenderedMail,
        list_unsubscribe: String,
    ) -> Self {
        let message_id = format!("<{}@{}>", send_id, from.email.domain());
        Self {
            send_id,
            from,
            to,
            subject: rendered.subject,
            html: rendered.html,
            text: rendered.text,
            message_id,
            list_unsubscribe,
        }
    }

    /// The MIME message: text and HTML as multipart/alternative (the text part first, as
    /// RFC 2046 orders by increasing preference), the one-click unsubscribe headers of
    /// RFC 8058 and the send id.
    pub fn to_message(&self) -> Result<Message, MailError> {
        let invalid = |reason: String| MailError::InvalidMail {
            send_id: self.send_id,
            reason,
        };
        if self.subject.chars().any(char::is_control) {
            return Err(invalid("the subject has control characters".to_owned()));
        }
        if !is_header_token(&self.message_id)
            || !self.message_id.starts_with('<')
            || !self.message_id.ends_with('>')
            || !self.message_id.contains('@')
        {
            return Err(invalid(format!(
                "message id {:?} is not of the form <id@domain>",
                self.message_id
            )));
        }
        // Printable ASCII without spaces or angle brackets: what a mail client can take out
        // of `<...>` as it stands, and all a URL ever needs.
        // RFC 5322 caps a header line at 998 characters, and the value is not folded.
        if !is_header_token(&self.list_unsubscribe)
            || self.list_unsubscribe.len() > 900
            || self.list_unsubscribe.contains(['<', '>'])
            || !(self.list_unsubscribe.starts_with("https://")
                || self.list_unsubscribe.starts_with("http://"))
        {
            return Err(invalid(format!(
                "unsubscribe URL {:?} is not an http(s) URL of at most 900 characters",
                self.list_unsubscribe
            )));
        }
        Message::builder()
            .from(self.from.clone())
            .to(self.to.clone())
            .subject(self.subject.as_str())
            .message_id(Some(self.message_id.clone()))
            .raw_header(header(
                LIST_UNSUBSCRIBE,
                format!("<{}>", self.list_unsubscribe),
            ))
            .raw_header(header(
                LIST_UNSUBSCRIBE_POST,
                "List-Unsubscribe=One-Click".to_owned(),
            ))
            .raw_header(header(SEND_ID_HEADER, self.send_id.to_string()))
            .multipart(MultiPart::alternative_plain_html(
                self.text.clone(),
                self.html.clone(),
            ))
            .map_err(|error| invalid(error.to_string()))
    }
}

/// Printable ASCII without spaces: safe to put in a header as it is.
fn is_header_token(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_graphic())
}

/// A header of ours. lettre would RFC 2047-encode anything but ASCII, so a line break
/// cannot inject a header; the values were checked to be tokens anyway, because mail
/// clients read `List-Unsubscribe` as it stands and decode nothing in it.
fn header(name: &'static str, value: String) -> HeaderValue {
    HeaderValue::new(HeaderName::new_from_ascii_str(name), value)
}

/// Why a mail was not sent, and whether trying again later can help.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The mail cannot become a valid message; it never will.
    #[error("mail {send_id} cannot be built: {reason}")]
    InvalidMail { send_id: Uuid, reason: String },
    /// The relay refused the mail or its recipient for good (a 5xx reply).
    #[error("relay refused mail {send_id} for good ({code}): {message}")]
    Rejected {
        send_id: Uuid,
        code: String,
        message: String,
    },
    /// The relay deferred the mail (a 4xx reply), could not be reached, or the
    /// conversation with it broke off.
    #[error("mail {send_id} not sent, try again later: {message}")]
    Deferred { send_id: Uuid, message: String },
    /// The mail could not be written where the transport keeps it.
    #[error("mail {send_id} could not be written to {path}: {source}")]
    Write {
        send_id: Uuid,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl MailError {
    /// Whether sending the same mail again later may succeed: the engine retries these
    /// and gives up on the others.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Deferred { .. } | Self::Write { .. })
    }

    /// Whether the mail will never be sent as it is.
    pub fn is_permanent(&self) -> bool {
        !self.is_transient()
    }

    /// The send the error is about.
    pub fn send_id(&self) -> Uuid {
        match self {
            Self::InvalidMail { send_id, .. }
            | Self::Rejected { send_id, .. }
            | Self::Deferred { send_id, .. }
            | Self::Write { send_id, .. } => *send_id,
        }
    }

    fn from_smtp(send_id: Uuid, error: &lettre::transport::smtp::Error) -> Self {
        let message = error_chain(error);
        match error.status() {
            // Authentication failures are 5xx, but they are the relay settings' fault, not
            // the mail's: once an operator fixes the credentials the same mail goes out.
            Some(code) if error.is_permanent() && !is_authentication_failure(&code.to_string()) => {
                Self::Rejected {
                    send_id,
                    code: code.to_string(),
                    message,
                }
            }
            // 4xx replies, and everything that is not a reply: refused or dropped
            // connections, timeouts, TLS handshakes, replies that did not parse.
            _ => Self::Deferred { send_id, message },
        }
    }
}

/// 530 authentication required, 534 mechanism too weak, 535 credentials invalid, 538
/// encryption required for the mechanism (RFC 4954).
fn is_authentication_failure(code: &str) -> bool {
    matches!(code, "530" | "534" | "535" | "538")
}

/// An error with its sources, which lettre keeps out of its `Display` (the server's reply
/// text is in a source).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Where nurture mails go.
#[async_trait]
pub trait MailTransport: Send + Sync + fmt::Debug {
    /// Delivers one mail to the relay (or wherever the transport keeps mails).
    async fn send(&self, mail: &NurtureMail) -> Result<(), MailError>;

    /// Deletes the copies this transport keeps of the mails of `send_ids`, when their
    /// contact was erased; those never kept are no error. A relay keeps no copies here.
    async fn forget(&self, send_ids: &[Uuid]) -> std::io::Result<()> {
        let _ = send_ids;
        Ok(())
    }
}

/// How the connection to the relay is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// No TLS at all: only for a relay on the same host or a trusted network.
    Plain,
    /// STARTTLS, required: the relay's certificate is checked against the built-in web
    /// PKI roots, and nothing is sent if the upgrade fails.
    StartTls,
}

/// Login at the relay.
#[derive(Debug, Clone)]
pub struct SmtpCredentials {
    pub username: String,
    pub password: SecretString,
}

/// Where the SMTP relay is and how to talk to it.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub credentials: Option<SmtpCredentials>,
    /// The name sent in EHLO; lettre's `[127.0.0.1]` when unset, which some relays refuse.
    pub hello_name: Option<String>,
    /// How long one SMTP command may take.
    pub timeout: Duration,
}

impl SmtpSettings {
    /// A relay without TLS or login, e.g. one on the same host.
    pub fn plain(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            security: SmtpSecurity::Plain,
            credentials: None,
            hello_name: None,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Relay settings that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("smtp relay settings are invalid: {0}")]
pub struct SmtpSettingsError(String);

/// Sends through an SMTP relay, one connection per mail.
#[derive(Debug, Clone)]
pub struct SmtpTransport {
    relay: AsyncSmtpTransport<Tokio1Executor>,
}

impl SmtpTransport {
    /// A transport to the relay in `settings`; connects only when it sends.
    pub fn new(settings: &SmtpSettings) -> Result<Self, SmtpSettingsError> {
        let loopback = matches!(settings.host.as_str(), "localhost" | "127.0.0.1" | "::1");
        if settings.security == SmtpSecurity::Plain && settings.credentials.is_some() && !loopback {
            // The password would cross the network in clear text.
            return Err(SmtpSettingsError(
                "credentials need STARTTLS unless the relay is on this host".to_owned(),
            ));
        }
        let tls = match settings.security {
            SmtpSecurity::Plain => Tls::None,
            SmtpSecurity::StartTls => Tls::Required(
                TlsParameters::new(settings.host.clone())
                    .map_err(|error| SmtpSettingsError(error_chain(&error)))?,
            ),
        };
        // "Dangerous" is lettre's word for a builder that leaves TLS to the caller: it is set
        // just below, from the settings.
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host)
            .port(settings.port)
            .tls(tls)
            .timeout(Some(settings.timeout));
        if let Some(credentials) = &settings.credentials {
            builder = builder.credentials(Credentials::new(
                credentials.username.clone(),
                credentials.password.expose_secret().to_owned(),
            ));
        }
        if let Some(name) = &settings.hello_name {
            builder = builder.hello_name(ClientId::Domain(name.clone()));
        }
        Ok(Self {
            relay: builder.build(),
        })
    }
}

#[async_trait]
impl MailTransport for SmtpTransport {
    #[tracing::instrument(skip_all, fields(send_id = %mail.send_id))]
    async fn send(&self, mail: &NurtureMail) -> Result<(), MailError> {
        let message = mail.to_message()?;
        match self.relay.send(message).await {
            Ok(_) => Ok(()),
            Err(error) => {
                let error = MailError::from_smtp(mail.send_id, &error);
                tracing::warn!(transient = error.is_transient(), %error, "nurture mail not sent");
                Err(error)
            }
        }
    }
}

/// Keeps each mail as `<send_id>.eml` in a directory instead of sending it: the embedded
/// mode's transport, and a way to look at what would have gone out.
#[derive(Debug, Clone)]
pub struct EmlDirectory {
    directory: PathBuf,
}

impl EmlDirectory {
    /// Mails go into `directory`, which is created when the first one is written.
    pub fn new(directory: impl Into<PathBuf>) -> Self {
        Self {
            directory: directory.into(),
        }
    }

    /// The directory mails are written into.
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// Where the mail of `send_id` is (or will be) kept. A UUID makes a safe file name.
    pub fn path_of(&self, send_id: Uuid) -> PathBuf {
        self.directory.join(format!("{send_id}.eml"))
    }
}

#[async_trait]
impl MailTransport for EmlDirectory {
    #[tracing::instrument(skip_all, fields(send_id = %mail.send_id))]
    async fn send(&self, mail: &NurtureMail) -> Result<(), MailError> {
        let bytes = mail.to_message()?.formatted();
        let directory = self.directory.clone();
        let path = self.path_of(mail.send_id);
        let send_id = mail.send_id;
        let target = path.clone();
        tokio::task::spawn_blocking(move || write_once(&directory, &target, &bytes))
            .await
            .map_err(|error| MailError::Write {
                send_id,
                path: path.clone(),
                source: std::io::Error::other(error),
            })?
            .map_err(|source| MailError::Write {
                send_id,
                path,
                source,
            })
    }

    async fn forget(&self, send_ids: &[Uuid]) -> std::io::Result<()> {
        let paths: Vec<PathBuf> = send_ids.iter().map(|id| self.path_of(*id)).collect();
        if paths.is_empty() {
            return Ok(());
        }
        let directory = self.directory.clone();
        tokio::task::spawn_blocking(move || remove_all(&directory, &paths))
            .await
            .map_err(std::io::Error::other)?
    }
}

/// Removes the files at `paths` from `directory`, those already gone included, and makes
/// the removal durable.
fn remove_all(directory: &Path, paths: &[PathBuf]) -> std::io::Result<()> {
    let mut removed = false;
    for path in paths {
        match std::fs::remove_file(path) {
            Ok(()) => removed = true,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
    }
    if removed {
        std::fs::File::open(directory)?.sync_all()?;
    }
    Ok(())
}

/// Writes `bytes` to `path` unless it is there already. Written to a temporary file and
/// renamed, so the directory holds whole mails or none: a crash leaves at most a hidden
/// `.tmp` file. A send id already there was sent, and like a relay the directory does not
/// take it twice; two writers racing past the check each rename a whole file over the
/// other, which still leaves one.
fn write_once(directory: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if path.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(directory)?;
    let file_name = path
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("mail");
    // Unique per writer, so two writers never write into the same temporary file.
    let temporary = directory.join(format!(".{file_name}.{}.tmp", Uuid::new_v4().simple()));
    let written = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        // On disk before the name points at it, or a power cut could leave an empty mail.
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        // The rename itself lives in the directory.
        std::fs::File::open(directory)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}
