//! Signed link tokens: the double opt-in confirmation, unsubscribe, tracked-click and
//! open-pixel links in mails carry a token signed with HMAC-SHA-256, so that nobody can
//! forge one, alter one, or turn one person's link into another's, and a click redirect
//! goes only to the URL the token signed. The paths and [`LinkUrls`] live here rather than
//! in capture, whose ingress serves them, so that every service mailing links makes them
//! the same way without depending on capture.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, TimeZone, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

/// The path of the double opt-in confirmation link.
pub const CONFIRM_PATH: &str = "/v1/consent/confirm";
/// The path of the unsubscribe link.
pub const UNSUBSCRIBE_PATH: &str = "/v1/consent/unsubscribe";
/// The path of the open-tracking pixel.
pub const OPEN_PATH: &str = "/v1/t/open";
/// The path of tracked-link redirects.
pub const CLICK_PATH: &str = "/v1/t/click";

/// The version prefix of the token format.
const VERSION: &str = "v1";
/// Bound into every MAC, so that no other use of the key can produce a valid token.
const DOMAIN: &[u8] = b"leadflow-link\0v1\0";
/// The shortest key accepted, in bytes.
const MIN_KEY_BYTES: usize = 32;
/// Anything longer is refused before any work is done.
const MAX_TOKEN_CHARS: usize = 4_096;

/// What a link is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkPurpose {
    /// Confirms a double opt-in.
    ConfirmOptIn,
    /// Withdraws consent.
    Unsubscribe,
    /// Records a click and redirects to the signed URL.
    Click,
    /// Records a mail open (the tracking pixel).
    Open,
}

impl LinkPurpose {
    /// The purpose's name, e.g. "confirm-opt-in".
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConfirmOptIn => "confirm-opt-in",
            Self::Unsubscribe => "unsubscribe",
            Self::Click => "click",
            Self::Open => "open",
        }
    }
}

/// What a link token says: whose link it is, what it is for, and until when.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LinkClaims {
    #[serde(rename = "p")]
    purpose: LinkPurpose,
    #[serde(rename = "c")]
    contact_id: Uuid,
    #[serde(rename = "s")]
    subject_id: Uuid,
    #[serde(rename = "cp", default, skip_serializing_if = "String::is_empty")]
    consent_purpose: String,
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    target_url: Option<String>,
    /// Seconds since the epoch.
    #[serde(rename = "e")]
    expires_at: i64,
}

impl LinkClaims {
    /// The link confirming the grant `consent_id` of `contact_id` for `consent_purpose`.
    pub fn confirm_opt_in(
        contact_id: Uuid,
        consent_id: Uuid,
        consent_purpose: &str,
        expires_at: DateTime<Utc>,
    ) -> Self {
        Self {
            purpose: LinkPurpose::ConfirmOptIn,
            contact_id,
            subject_id: consent_id,
            consent_purpose: consent_purpose.to_owned(),
            target_url: None,
            expires_at: expires_at.timestamp(),
        }
    }

    /// The unsubscribe link of a mail (`send_id`, nil when none) for one purpose, or for
    /// all when `consent_purpose` is empty.
    pub fn unsubscribe(
        contact_id: Uuid,
        send_id: Uuid,
        consent_purpose: &str,
        expires_at: DateTime<Utc>,
    ) -> Self {
        Self {
            purpose: LinkPurpose::Unsubscribe,
            contact_id,
            subject_id: send_id,
            consent_purpose: consent_purpose.to_owned(),
            target_url: None,
            expires_at: expires_at.timestamp(),
        }
    }

    /// The tracked link of a mail to `url`; refused unless `url` is an absolute http or
    /// https URL.
    pub fn click(
        contact_id: Uuid,
        send_id: Uuid,
        url: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<Self, LinkError> {
        if !is_web_url(url) {
            return Err(LinkError::Malformed);
        }
        Ok(Self {
            purpose: LinkPurpose::Click,
            contact_id,
            subject_id: send_id,
            consent_purpose: String::new(),
            target_url: Some(url.to_owned()),
            expires_at: expires_at.timestamp(),
        })
    }

    /// The open-tracking pixel of a mail.
    pub fn open(contact_id: Uuid, send_id: Uuid, expires_at: DateTime<Utc>) -> Self {
        Self {
            purpose: LinkPurpose::Open,
            contact_id,
            subject_id: send_id,
            consent_purpose: String::new(),
            target_url: None,
            expires_at: expires_at.timestamp(),
        }
    }

    /// What the link is for.
    pub fn purpose(&self) -> LinkPurpose {
        self.purpose
    }

    /// Whose link it is.
    pub fn contact_id(&self) -> Uuid {
        self.contact_id
    }

    /// The consent grant (confirmation) or the mail send (the others); nil when none.
    pub fn subject_id(&self) -> Uuid {
        self.subject_id
    }

    /// The consent purpose it confirms or withdraws; empty for all or none.
    pub fn consent_purpose(&self) -> &str {
        &self.consent_purpose
    }

    /// Where a click goes.
    pub fn target_url(&self) -> Option<&str> {
        self.target_url.as_deref()
    }

    /// When the link stops working.
    pub fn expires_at(&self) -> DateTime<Utc> {
        Utc.timestamp_opt(self.expires_at, 0)
            .single()
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
}

fn is_web_url(url: &str) -> bool {
    url.len() <= 2_048
        && url.parse::<http::Uri>().is_ok_and(|uri| {
            matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some()
        })
}

/// Why a link token was refused. The messages are for people and never carry the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Not a token at all.
    #[error("the link is not valid")]
    Malformed,
    /// Altered, or not signed by this installation.
    #[error("the link is not valid")]
    BadSignature,
    /// A valid token of another kind of link.
    #[error("the link is not valid here")]
    WrongPurpose,
    /// A valid token past its time.
    #[error("the link has expired")]
    Expired,
}

/// A key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a link key must be at least {MIN_KEY_BYTES} bytes long")]
pub struct LinkKeyError;

/// Signs link tokens with the current key and verifies them with it or with an earlier one.
#[derive(Clone)]
pub struct LinkSigner {
    current: HmacSha256,
    previous: Vec<HmacSha256>,
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("LinkSigner")
            .field("previous_keys", &self.previous.len())
            .finish_non_exhaustive()
    }
}

fn pseudonym_with(key: &HmacSha256, purpose: &str, value: &str) -> String {
    let mut mac = key.clone();
    // Bound apart from the link MACs, so that no hash can serve as a token's tag.
    mac.update(b"leadflow pseudonym\0");
    mac.update(purpose.as_bytes());
    mac.update(b"\0");
    mac.update(value.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn keyed(key: &[u8]) -> Result<HmacSha256, LinkKeyError> {
    if key.len() < MIN_KEY_BYTES {
        return Err(LinkKeyError);
    }
    HmacSha256::new_from_slice(key).map_err(|_| LinkKeyError)
}

impl LinkSigner {
    /// Signs with `current`; tokens signed with any of `previous` (before a key rotation)
    /// still verify.
    pub fn new(current: &[u8], previous: &[&[u8]]) -> Result<Self, LinkKeyError> {
        Ok(Self {
            current: keyed(current)?,
            previous: previous
                .iter()
                .map(|key| keyed(key))
                .collect::<Result<_, _>>()?,
        })
    }

    /// The keyed hash (HMAC-SHA-256, hex) of `value` for `purpose`, under the current key:
    /// it names a value without holding it, e.g. the email of an erased contact.
    pub fn pseudonym(&self, purpose: &str, value: &str) -> String {
        pseudonym_with(&self.current, purpose, value)
    }

    /// [`Self::pseudonym`] under the current key and every earlier one, current first, to
    /// find a value hashed before a key rotation.
    pub fn pseudonyms(&self, purpose: &str, value: &str) -> Vec<String> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .map(|key| pseudonym_with(key, purpose, value))
            .collect()
    }

    /// The token of `claims`: URL-safe, needing no escaping in a query or a path.
    pub fn sign(&self, claims: &LinkClaims) -> String {
        // Serialising these plain fields cannot fail.
        let payload = serde_json::to_vec(claims).unwrap_or_default();
        let payload = URL_SAFE_NO_PAD.encode(payload);
        let mut mac = self.current.clone();
        mac.update(DOMAIN);
        mac.update(payload.as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{VERSION}.{payload}.{tag}")
    }

    /// The claims of `token` when this installation signed it for `expected` and it has not
    /// expired at `now`.
    pub fn verify(
        &self,
        token: &str,
        expected: LinkPurpose,
        now: DateTime<Utc>,
    ) -> Result<LinkClaims, LinkError> {
        if token.len() > MAX_TOKEN_CHARS {
            return Err(LinkError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(VERSION), Some(payload), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(LinkError::Malformed);
        };
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| LinkError::Malformed)?;
        // The MAC is checked before the payload is even decoded.
        let signed = std::iter::once(&self.current)
            .chain(&self.previous)
            .any(|key| {
                let mut mac = key.clone();
                mac.update(DOMAIN);
                mac.update(payload.as_bytes());
                mac.verify_slice(&tag).is_ok()
            });
        if !signed {
            return Err(LinkError::BadSignature);
        }
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| LinkError::Malformed)?;
        let claims: LinkClaims =
            serde_json::from_slice(&payload).map_err(|_| LinkError::Malformed)?;
        if claims.purpose != expected {
            return Err(LinkError::WrongPurpose);
        }
        if claims.purpose == LinkPurpose::Click
            && !claims.target_url.as_deref().is_some_and(is_web_url)
        {
            return Err(LinkError::Malformed);
        }
        if now.timestamp() >= claims.expires_at {
            return Err(LinkError::Expired);
        }
        Ok(claims)
    }
}

/// Makes the absolute URLs of signed links under the ingress's public URL.
#[derive(Debug, Clone)]
pub struct LinkUrls {
    signer: LinkSigner,
    public_url: String,
}

impl LinkUrls {
    /// Links under `public_url` (trailing slashes trimmed), signed by `signer`.
    pub fn new(signer: LinkSigner, public_url: &str) -> Self {
        Self {
            signer,
            // The paths start with a slash; a configured trailing one would double it.
            public_url: public_url.trim_end_matches('/').to_owned(),
        }
    }

    /// The signer, to verify tokens that come back.
    pub fn signer(&self) -> &LinkSigner {
        &self.signer
    }

    /// `{public_url}{path}?token={token}` for signed `claims`.
    pub fn url(&self, path: &str, claims: &LinkClaims) -> String {
        // The token is URL-safe, so it goes into the query unescaped.
        format!(
            "{}{path}?token={}",
            self.public_url,
            self.signer.sign(claims)
        )
    }

    /// The tracked link of mail `send_id` to `target`; [`LinkError::Malformed`] unless
    /// `target` is an absolute http or https URL.
    pub fn click(
        &self,
        contact_id: Uuid,
        send_id: Uuid,
        target: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<String, LinkError> {
        let claims = LinkClaims::click(contact_id, send_id, target, expires_at)?;
        Ok(self.url(CLICK_PATH, &claims))
    }

    /// The open pixel of mail `send_id`.
    pub fn open(&self, contact_id: Uuid, send_id: Uuid, expires_at: DateTime<Utc>) -> String {
        self.url(
            OPEN_PATH,
            &LinkClaims::open(contact_id, send_id, expires_at),
        )
    }

    /// The unsubscribe link of mail `send_id` for `consent_purpose` (all purposes when
    /// empty).
    pub fn unsubscribe(
        &self,
        contact_id: Uuid,
        send_id: Uuid,
        consent_purpose: &str,
        expires_at: DateTime<Utc>,
    ) -> String {
        self.url(
            UNSUBSCRIBE_PATH,
            &LinkClaims::unsubscribe(contact_id, send_id, consent_purpose, expires_at),
        )
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use proptest::prelude::*;

    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    const OTHER_KEY: &[u8] = b"fedcba9876543210fedcba9876543210";

    fn signer() -> LinkSigner {
        LinkSigner::new(KEY, &[]).expect("key")
    }

    fn later() -> DateTime<Utc> {
        Utc::now() + Duration::days(7)
    }

    #[test]
    fn every_kind_of_link_round_trips() {
        let contact = Uuid::now_v7();
        let send = Uuid::now_v7();
        let claims = [
            LinkClaims::confirm_opt_in(contact, Uuid::now_v7(), "nurture-email", later()),
            LinkClaims::unsubscribe(contact, send, "", later()),
            LinkClaims::click(
                contact,
                send,
                "https://example.com/white-paper?x=1",
                later(),
            )
            .expect("web url"),
            LinkClaims::open(contact, send, later()),
        ];
        for claims in claims {
            let token = signer().sign(&claims);
            assert!(
                token
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')),
                "{token}"
            );
            let verified = signer()
                .verify(&token, claims.purpose(), Utc::now())
                .expect("valid");
            assert_eq!(verified, claims);
        }
    }

    #[test]
    fn a_token_of_another_key_is_refused_and_a_rotated_key_still_verifies() {
        let claims = LinkClaims::open(Uuid::now_v7(), Uuid::now_v7(), later());
        let old = LinkSigner::new(OTHER_KEY, &[]).expect("key").sign(&claims);
        assert_eq!(
            signer().verify(&old, LinkPurpose::Open, Utc::now()),
            Err(LinkError::BadSignature)
        );
        let rotated = LinkSigner::new(KEY, &[OTHER_KEY]).expect("keys");
        assert_eq!(
            rotated.verify(&old, LinkPurpose::Open, Utc::now()),
            Ok(claims)
        );
    }

    #[test]
    fn a_pseudonym_depends_on_key_purpose_and_value_and_survives_a_rotation() {
        let hash = signer().pseudonym("email", "mira@example.com");
        assert_eq!(hash.len(), 64, "{hash}");
        assert!(hash.bytes().all(|byte| byte.is_ascii_hexdigit()), "{hash}");
        assert_eq!(hash, signer().pseudonym("email", "mira@example.com"));
        assert_ne!(hash, signer().pseudonym("email", "mara@example.com"));
        assert_ne!(hash, signer().pseudonym("phone", "mira@example.com"));
        let other = LinkSigner::new(OTHER_KEY, &[]).expect("key");
        assert_ne!(hash, other.pseudonym("email", "mira@example.com"));
        let rotated = LinkSigner::new(OTHER_KEY, &[KEY]).expect("keys");
        assert_eq!(
            rotated.pseudonyms("email", "mira@example.com"),
            vec![other.pseudonym("email", "mira@example.com"), hash]
        );
    }

    #[test]
    fn every_altered_character_is_refused() {
        let token = signer().sign(&LinkClaims::confirm_opt_in(
            Uuid::now_v7(),
            Uuid::now_v7(),
            "nurture-email",
            later(),
        ));
        for (index, original) in token.char_indices() {
            let replacement = if original == 'A' { 'B' } else { 'A' };
            let mut altered = token.clone();
            altered.replace_range(index..index + 1, &replacement.to_string());
            assert!(
                signer()
                    .verify(&altered, LinkPurpose::ConfirmOptIn, Utc::now())
                    .is_err(),
                "position {index}"
            );
        }
    }

    #[test]
    fn a_link_cannot_be_turned_into_another_contacts() {
        let claims = LinkClaims::unsubscribe(Uuid::now_v7(), Uuid::nil(), "", later());
        let token = signer().sign(&claims);
        let parts: Vec<&str> = token.split('.').collect();
        let mut forged_claims = claims.clone();
        forged_claims.contact_id = Uuid::now_v7();
        let forged_payload =
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged_claims).expect("json"));
        let forged = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
        assert_eq!(
            signer().verify(&forged, LinkPurpose::Unsubscribe, Utc::now()),
            Err(LinkError::BadSignature)
        );
    }

    #[test]
    fn expired_wrong_purpose_and_garbage_are_refused() {
        let expired = signer().sign(&LinkClaims::open(
            Uuid::now_v7(),
            Uuid::now_v7(),
            Utc::now() - Duration::seconds(1),
        ));
        assert_eq!(
            signer().verify(&expired, LinkPurpose::Open, Utc::now()),
            Err(LinkError::Expired)
        );
        let open = signer().sign(&LinkClaims::open(Uuid::now_v7(), Uuid::now_v7(), later()));
        assert_eq!(
            signer().verify(&open, LinkPurpose::Unsubscribe, Utc::now()),
            Err(LinkError::WrongPurpose)
        );
        for garbage in [
            "",
            "v1",
            "v1..",
            "v2.abc.def",
            "x.y.z.w",
            &"a".repeat(5_000),
        ] {
            assert!(
                matches!(
                    signer().verify(garbage, LinkPurpose::Open, Utc::now()),
                    Err(LinkError::Malformed | LinkError::BadSignature)
                ),
                "{garbage:.20}"
            );
        }
        assert_eq!(
            LinkClaims::click(Uuid::nil(), Uuid::nil(), "javascript:alert(1)", later()),
            Err(LinkError::Malformed)
        );
    }

    #[test]
    fn short_keys_are_refused_and_keys_never_print() {
        assert_eq!(LinkSigner::new(b"short", &[]).err(), Some(LinkKeyError));
        let printed = format!("{:?}", signer());
        assert!(!printed.contains("0123456789abcdef"), "{printed}");
    }

    /// The token of a URL made by [`LinkUrls`], and what comes before it.
    fn split_url(url: &str) -> (&str, &str) {
        url.split_once("?token=").expect("a token in the query")
    }

    #[test]
    fn link_urls_verify_back_under_the_trimmed_public_url() {
        let urls = LinkUrls::new(signer(), "https://go.example.com/");
        let contact = Uuid::now_v7();
        let send = Uuid::now_v7();
        let target = "https://example.com/white-paper?x=1";

        let click = urls.click(contact, send, target, later()).expect("web url");
        let (base, token) = split_url(&click);
        assert_eq!(base, "https://go.example.com/v1/t/click");
        let claims = urls
            .signer()
            .verify(token, LinkPurpose::Click, Utc::now())
            .expect("valid");
        assert_eq!(claims.target_url(), Some(target));
        assert_eq!((claims.contact_id(), claims.subject_id()), (contact, send));

        let open = urls.open(contact, send, later());
        let (base, token) = split_url(&open);
        assert_eq!(base, "https://go.example.com/v1/t/open");
        assert!(
            signer()
                .verify(token, LinkPurpose::Open, Utc::now())
                .is_ok()
        );

        let unsubscribe = urls.unsubscribe(contact, send, "nurture-email", later());
        let (base, token) = split_url(&unsubscribe);
        assert_eq!(base, "https://go.example.com/v1/consent/unsubscribe");
        let claims = signer()
            .verify(token, LinkPurpose::Unsubscribe, Utc::now())
            .expect("valid");
        assert_eq!(claims.consent_purpose(), "nurture-email");

        assert_eq!(
            urls.click(contact, send, "javascript:alert(1)", later()),
            Err(LinkError::Malformed)
        );
    }

    proptest! {
        #[test]
        fn verify_never_panics(token in ".{0,300}") {
            let _ = signer().verify(&token, LinkPurpose::Click, Utc::now());
        }

        #[test]
        fn any_claims_round_trip(contact in any::<u128>(), send in any::<u128>(), days in 1_i64..3_650) {
            let claims = LinkClaims::open(
                Uuid::from_u128(contact),
                Uuid::from_u128(send),
                Utc::now() + Duration::days(days),
            );
            let token = signer().sign(&claims);
            prop_assert_eq!(signer().verify(&token, LinkPurpose::Open, Utc::now()), Ok(claims));
        }
    }
}
