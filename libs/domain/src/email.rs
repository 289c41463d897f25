//! Email addresses, parsed once into a type that cannot be invalid, normalised so that one
//! person is one contact, and told apart as company or free-mail addresses.

use std::fmt;

/// A syntactically valid, normalised (trimmed, lower-cased) email address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailAddress(String);

/// Why a string is not an email address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    /// Nothing was given.
    #[error("is empty")]
    Empty,
    /// Longer than the 254 characters an address may have.
    #[error("is longer than 254 characters")]
    TooLong,
    /// Not exactly one `@` with something on both sides.
    #[error("must look like name@example.com")]
    Shape,
    /// The part before the `@` has a character addresses do not allow here.
    #[error("has an invalid character before the @")]
    LocalPart,
    /// The part after the `@` is not a domain name with a dot.
    #[error("has an invalid domain")]
    Domain,
}

/// Domains of free-mail providers: an address there says nothing about a company.
pub(crate) const FREE_MAIL_DOMAINS: &[&str] = &[
    "aol.com",
    "gmail.com",
    "gmx.at",
    "gmx.ch",
    "gmx.de",
    "gmx.net",
    "googlemail.com",
    "hotmail.com",
    "hotmail.de",
    "icloud.com",
    "live.com",
    "mail.com",
    "mail.ru",
    "me.com",
    "msn.com",
    "outlook.com",
    "outlook.de",
    "posteo.de",
    "proton.me",
    "protonmail.com",
    "t-online.de",
    "web.de",
    "yahoo.com",
    "yahoo.de",
    "yandex.ru",
    "zoho.com",
];

impl EmailAddress {
    /// Parses and normalises `input`.
    pub fn parse(input: &str) -> Result<Self, EmailError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(EmailError::Empty);
        }
        if trimmed.chars().count() > 254 {
            return Err(EmailError::TooLong);
        }
        let (local, domain) = trimmed.rsplit_once('@').ok_or(EmailError::Shape)?;
        if local.is_empty() || domain.is_empty() || local.contains('@') {
            return Err(EmailError::Shape);
        }
        let local_ok = local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local
                .chars()
                .all(|c| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
        if !local_ok {
            return Err(EmailError::LocalPart);
        }
        let domain = domain.to_lowercase();
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_alphanumeric() || c == '-')
            });
        if !domain_ok {
            return Err(EmailError::Domain);
        }
        Ok(Self(format!("{}@{domain}", local.to_lowercase())))
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The domain after the `@`, lower-cased.
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(_, domain)| domain)
    }

    /// Whether the address is at a free-mail provider, which never identifies a company.
    pub fn is_free_mail(&self) -> bool {
        crate::is_free_mail_domain(self.domain())
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl AsRef<str> for EmailAddress {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn normalises_case_and_whitespace() {
        let email = EmailAddress::parse("  Anna.Schmidt@Example.COM ").expect("valid");
        assert_eq!(email.as_str(), "anna.schmidt@example.com");
        assert_eq!(email.domain(), "example.com");
        assert!(!email.is_free_mail());
    }

    #[test]
    fn rejects_what_is_not_an_address() {
        assert_eq!(EmailAddress::parse(""), Err(EmailError::Empty));
        assert_eq!(EmailAddress::parse("anna"), Err(EmailError::Shape));
        assert_eq!(EmailAddress::parse("@example.com"), Err(EmailError::Shape));
        assert_eq!(
            EmailAddress::parse("a@b@example.com"),
            Err(EmailError::Shape)
        );
        assert_eq!(
            EmailAddress::parse("an na@example.com"),
            Err(EmailError::LocalPart)
        );
        assert_eq!(
            EmailAddress::parse("anna@localhost"),
            Err(EmailError::Domain)
        );
        assert_eq!(EmailAddress::parse("anna@-x.com"), Err(EmailError::Domain));
        assert_eq!(
            EmailAddress::parse("anna..b@x.com"),
            Err(EmailError::LocalPart)
        );
    }

    #[test]
    fn free_mail_is_recognised() {
        assert!(
            EmailAddress::parse("max@GMAIL.com")
                .expect("valid")
                .is_free_mail()
        );
        assert!(
            EmailAddress::parse("max@web.de")
                .expect("valid")
                .is_free_mail()
        );
    }

    proptest! {
        #[test]
        fn parsing_is_idempotent(input in "[a-zA-Z0-9._%+-]{1,20}@[a-zA-Z0-9-]{1,10}\\.[a-zA-Z]{2,6}") {
            if let Ok(email) = EmailAddress::parse(&input) {
                prop_assert_eq!(EmailAddress::parse(email.as_str()), Ok(email.clone()));
                prop_assert_eq!(email.as_str(), email.as_str().to_lowercase());
            }
        }

        #[test]
        fn never_panics(input in ".{0,300}") {
            let _ = EmailAddress::parse(&input);
        }
    }
}
