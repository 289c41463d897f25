//! Who a lead is: a company is known by its web domain, and a lead (buying unit) by that
//! domain and its site or unit. Free-mail domains say nothing about a company, so they
//! never make a company lead.

use std::fmt;

use crate::EmailAddress;

/// A normalised company web domain, such as `example.com`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CompanyDomain(String);

/// Why a string is not a company web domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// Not a domain name with a dot, made of letters, digits, hyphens and dots.
    #[error("must be a web domain such as \"example.com\"")]
    Shape,
    /// A free-mail provider's domain, which identifies no company.
    #[error("is a free-mail domain, which identifies no company")]
    FreeMail,
}

impl CompanyDomain {
    /// Reads a domain as people type it: `https://www.Example.com/about` is `example.com`.
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        let lowered = input.trim().to_lowercase();
        let without_scheme = lowered
            .strip_prefix("https://")
            .or_else(|| lowered.strip_prefix("http://"))
            .unwrap_or(&lowered);
        let host = without_scheme
            .split(['/', '?', '#', ':'])
            .next()
            .unwrap_or_default()
            .trim_end_matches('.');
        let host = host.strip_prefix("www.").unwrap_or(host);
        let labels_valid = host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
        if host.len() > 253 || !host.contains('.') || !labels_valid {
            return Err(DomainError::Shape);
        }
        if is_free_mail_domain(host) {
            return Err(DomainError::FreeMail);
        }
        Ok(Self(host.to_owned()))
    }

    /// The company domain of an email address; none for a free-mail address.
    pub fn of_email(email: &EmailAddress) -> Option<Self> {
        Self::parse(email.domain()).ok()
    }

    /// The domain.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CompanyDomain {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// Whether `domain` (lower-cased) belongs to a free-mail provider.
pub fn is_free_mail_domain(domain: &str) -> bool {
    crate::email::FREE_MAIL_DOMAINS.contains(&domain)
}

/// A site or unit name compared the way people mean it: case, surrounding and repeated
/// spaces do not make another site ("Munich  Plant" is "munich plant").
pub fn site_key(site: &str) -> String {
    site.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_read_as_people_type_them() {
        for typed in [
            "example.com",
            "Example.COM",
            " https://www.example.com/about?x=1 ",
            "http://example.com:8080",
            "www.example.com.",
        ] {
            assert_eq!(
                CompanyDomain::parse(typed).map(|domain| domain.to_string()),
                Ok("example.com".to_owned()),
                "{typed}"
            );
        }
        assert_eq!(
            CompanyDomain::parse("eu.sales.example.co.uk").map(|d| d.to_string()),
            Ok("eu.sales.example.co.uk".to_owned())
        );
    }

    #[test]
    fn what_is_not_a_domain_is_refused() {
        for bad in [
            "",
            "example",
            "exa mple.com",
            "-x.com",
            "a..b",
            "x_y.com",
            "@.com",
        ] {
            assert_eq!(
                CompanyDomain::parse(bad),
                Err(DomainError::Shape),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn free_mail_never_makes_a_company() {
        assert_eq!(
            CompanyDomain::parse("https://www.gmail.com"),
            Err(DomainError::FreeMail)
        );
        let private = EmailAddress::parse("jana@web.de").expect("valid");
        assert_eq!(CompanyDomain::of_email(&private), None);
        let work = EmailAddress::parse("jana@Acme.example").expect("valid");
        assert_eq!(
            CompanyDomain::of_email(&work).map(|domain| domain.to_string()),
            Some("acme.example".to_owned())
        );
    }

    #[test]
    fn sites_compare_without_case_or_extra_spaces() {
        assert_eq!(site_key("  Munich   Plant "), "munich plant");
        assert_eq!(site_key("MUNICH PLANT"), site_key("munich plant"));
        assert_ne!(site_key("Munich"), site_key("Hamburg"));
        assert_eq!(site_key("   "), "");
    }
}
