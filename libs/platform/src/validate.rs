//! Small checks that every service's request parsing shares, each recording a field
//! violation under the field's path instead of failing at the first problem.

use crate::FieldViolations;

/// Checks that `value` is not blank and at most `max_chars` long; returns it trimmed.
pub fn required_text(
    violations: &mut FieldViolations,
    field: &str,
    value: &str,
    max_chars: usize,
) -> String {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        violations.add(field, "is required");
    } else {
        check_length(violations, field, trimmed, max_chars);
    }
    trimmed.to_owned()
}

/// Checks that `value`, which may be blank, is at most `max_chars` long; returns it trimmed.
pub fn optional_text(
    violations: &mut FieldViolations,
    field: &str,
    value: &str,
    max_chars: usize,
) -> String {
    let trimmed = value.trim();
    check_length(violations, field, trimmed, max_chars);
    trimmed.to_owned()
}

fn check_length(violations: &mut FieldViolations, field: &str, value: &str, max_chars: usize) {
    let length = value.chars().count();
    if length > max_chars {
        violations.add(
            field,
            format!("is {length} characters long; at most {max_chars} are allowed"),
        );
    }
}

/// Checks that `value` is a lower-case identifier (`a-z`, digits, `_` and `-`, starting
/// with a letter, at most 64 characters), as used for field names, roles and products.
pub fn identifier(violations: &mut FieldViolations, field: &str, value: &str) -> String {
    let trimmed = value.trim();
    let valid = trimmed.len() <= 64
        && trimmed
            .chars()
            .next()
            .is_some_and(|first| first.is_ascii_lowercase())
        && trimmed
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if trimmed.is_empty() {
        violations.add(field, "is required");
    } else if !valid {
        violations.add(
            field,
            "must start with a lower-case letter and contain only a-z, 0-9, '_' and '-' (at most 64)",
        );
    }
    trimmed.to_owned()
}

/// Checks that `value` parses as a UUID.
pub fn uuid(violations: &mut FieldViolations, field: &str, value: &str) -> Option<uuid::Uuid> {
    if value.trim().is_empty() {
        violations.add(field, "is required");
        return None;
    }
    match uuid::Uuid::parse_str(value.trim()) {
        Ok(id) => Some(id),
        Err(_) => {
            violations.add(field, "must be a UUID");
            None
        }
    }
}

/// Reads the one id a request names, or the violation that says why it cannot.
pub fn required_uuid(field: &str, value: &str) -> Result<uuid::Uuid, FieldViolations> {
    let mut violations = FieldViolations::new();
    let id = uuid(&mut violations, field, value);
    violations.into_result()?;
    id.ok_or_else(|| FieldViolations::single(field, "must be a UUID"))
}

/// Checks a page size: 0 means `default`, negative is refused, above `max` is capped.
pub fn page_size(
    violations: &mut FieldViolations,
    field: &str,
    value: i32,
    default: u32,
    max: u32,
) -> u32 {
    match value {
        0 => default,
        negative if negative < 0 => {
            violations.add(field, "must not be negative");
            default
        }
        positive => (positive as u32).min(max),
    }
}

/// Checks an idempotency key: required, at most 255 printable characters.
pub fn idempotency_key(violations: &mut FieldViolations, value: &str) -> String {
    if value.is_empty() {
        violations.add("idempotency_key", "is required");
    } else if value.len() > 255 || value.chars().any(char::is_control) {
        violations.add(
            "idempotency_key",
            "must be at most 255 printable characters",
        );
    }
    value.to_owned()
}

/// Checks that `value` is an absolute http or https URL of at most 2,048 characters.
pub fn http_url(violations: &mut FieldViolations, field: &str, value: &str) -> String {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        violations.add(field, "is required");
        return String::new();
    }
    let valid = trimmed.len() <= 2_048
        && !trimmed.chars().any(char::is_whitespace)
        && trimmed.parse::<http::Uri>().is_ok_and(|uri| {
            matches!(uri.scheme_str(), Some("http" | "https"))
                && uri
                    .authority()
                    .is_some_and(|authority| !authority.host().is_empty())
        });
    if !valid {
        violations.add(
            field,
            "must be an absolute http or https URL of at most 2048 characters",
        );
    }
    trimmed.to_owned()
}

/// Checks that `value` looks like a BCP 47 language tag such as `de` or `en-GB`.
pub fn language_tag(violations: &mut FieldViolations, field: &str, value: &str) -> String {
    let trimmed = value.trim();
    let mut subtags = trimmed.split('-');
    let primary_ok = subtags.next().is_some_and(|primary| {
        (2..=3).contains(&primary.len()) && primary.chars().all(|c| c.is_ascii_alphabetic())
    });
    let rest_ok = subtags.all(|subtag| {
        (1..=8).contains(&subtag.len()) && subtag.chars().all(|c| c.is_ascii_alphanumeric())
    });
    if trimmed.is_empty() {
        violations.add(field, "is required");
    } else if !(primary_ok && rest_ok) {
        violations.add(
            field,
            "must be a BCP 47 language tag such as \"de\" or \"en-GB\"",
        );
    }
    trimmed.to_owned()
}

/// Checks that `value` is an ISO 4217 currency code in upper case, such as `EUR`.
pub fn currency(violations: &mut FieldViolations, field: &str, value: &str) {
    if value.len() != 3 || !value.chars().all(|c| c.is_ascii_uppercase()) {
        violations.add(
            field,
            "must be an ISO 4217 currency code in upper case, such as \"EUR\"",
        );
    }
}

/// The bounds of the optional time range `field`: each bound that is not a valid time,
/// and an end before the start, is recorded under its path (`field.start_time`, ...).
pub fn time_range(
    violations: &mut FieldViolations,
    field: &str,
    range: Option<&leadflow_proto::common::v1::TimeRange>,
) -> (
    Option<chrono::DateTime<chrono::Utc>>,
    Option<chrono::DateTime<chrono::Utc>>,
) {
    let Some(range) = range else {
        return (None, None);
    };
    let mut bound = |name: &str, timestamp: Option<&prost_types::Timestamp>| {
        timestamp.and_then(|timestamp| {
            let time = crate::time::from_timestamp(timestamp);
            if time.is_none() {
                violations.add(format!("{field}.{name}"), "is not a valid time");
            }
            time
        })
    };
    let start = bound("start_time", range.start_time.as_ref());
    let end = bound("end_time", range.end_time.as_ref());
    if let (Some(start), Some(end)) = (start, end)
        && end < start
    {
        violations.add(
            format!("{field}.end_time"),
            format!("is before {field}.start_time"),
        );
    }
    (start, end)
}

/// Reads a page token this service issued (the last id of the previous page).
pub fn page_token(violations: &mut FieldViolations, value: &str) -> Option<uuid::Uuid> {
    if value.is_empty() {
        return None;
    }
    let token = uuid::Uuid::parse_str(value).ok();
    if token.is_none() {
        violations.add("page_token", "is not a token this service issued");
    }
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_every_violation() {
        let mut violations = FieldViolations::new();
        required_text(&mut violations, "a", "  ", 10);
        required_text(&mut violations, "b", "abcdefghijk", 10);
        identifier(&mut violations, "c", "Email");
        uuid(&mut violations, "d", "nope");
        page_size(&mut violations, "e", -1, 50, 500);
        let fields: Vec<_> = violations.iter().map(|(field, _)| field).collect();
        assert_eq!(fields, ["a", "b", "c", "d", "e"]);
    }

    #[test]
    fn accepts_what_is_valid() {
        let mut violations = FieldViolations::new();
        assert_eq!(
            required_text(&mut violations, "a", " Webinar form ", 20),
            "Webinar form"
        );
        assert_eq!(identifier(&mut violations, "b", "first_name"), "first_name");
        assert_eq!(page_size(&mut violations, "c", 0, 50, 500), 50);
        assert_eq!(page_size(&mut violations, "c", 9_999, 50, 500), 500);
        assert_eq!(
            http_url(&mut violations, "d", "https://example.com/a?b=c"),
            "https://example.com/a?b=c"
        );
        assert_eq!(language_tag(&mut violations, "e", "en-GB"), "en-GB");
        assert!(violations.is_empty());
    }

    #[test]
    fn refuses_relative_or_odd_urls_and_tags() {
        let mut violations = FieldViolations::new();
        http_url(&mut violations, "a", "/relative");
        http_url(&mut violations, "b", "javascript:alert(1)");
        http_url(&mut violations, "c", "ftp://example.com/x");
        language_tag(&mut violations, "d", "english");
        language_tag(&mut violations, "e", "de_DE");
        page_token(&mut violations, "zzz");
        assert_eq!(violations.iter().count(), 6);
    }
}
