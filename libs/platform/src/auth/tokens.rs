//! The tokens file: which bearer tokens may call, each with a name (what logs show) and its
//! scopes. A token is given as the SHA-256 of the secret (`sha256`, so the file holds
//! nothing a caller could present) or as the secret itself (`token`); only its digest is
//! kept, and presented tokens are compared digest to digest in constant time.

use std::{
    collections::BTreeSet,
    fmt,
    ops::Range,
    path::{Path, PathBuf},
};

use hmac::digest::{CtOutput, Output};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use super::Scope;

/// The fewest characters a token given as a secret may have: short ones can be guessed.
pub const MIN_TOKEN_CHARS: usize = 16;

/// The file cannot be read or does not describe a usable set of tokens.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// The file cannot be read.
    #[error("cannot read the tokens file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid: the message says where and why, never a token.
    #[error("tokens file {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Where (line and column when known) and what is wrong.
        message: String,
    },
}

/// The file as written: `[[tokens]]` tables.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tokens: Vec<Spanned<TokenEntry>>,
}

/// One `[[tokens]]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    scopes: Vec<Scope>,
    #[serde(default, deserialize_with = "secret_string")]
    token: Option<SecretString>,
    #[serde(default)]
    sha256: Option<Sha256Hex>,
}

/// A SHA-256 digest written as 64 hexadecimal digits.
struct Sha256Hex(Output<Sha256>);

impl<'de> Deserialize<'de> for Sha256Hex {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        // The value is not echoed: it may be a secret written into the wrong field.
        let invalid = || {
            serde::de::Error::custom(
                "sha256 must be 64 hexadecimal digits, the SHA-256 of the token \
                 (e.g. `printf %s \"$TOKEN\" | sha256sum`)",
            )
        };
        if text.len() != 64 || !text.is_ascii() {
            return Err(invalid());
        }
        let mut digest = Output::<Sha256>::default();
        for (byte, pair) in digest.iter_mut().zip(text.as_bytes().chunks(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| invalid())?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| invalid())?;
        }
        Ok(Self(digest))
    }
}

/// A string read as a secret; anything else is refused without echoing the value (serde's
/// own message would quote a number).
fn secret_string<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SecretString>, D::Error> {
    match toml::Value::deserialize(deserializer)? {
        toml::Value::String(text) => Ok(Some(SecretString::from(text))),
        _ => Err(serde::de::Error::custom("token must be a string")),
    }
}

/// One configured token: its name, its digest and its scopes.
struct Token {
    name: String,
    digest: CtOutput<Sha256>,
    scopes: BTreeSet<Scope>,
}

/// The configured tokens. Neither the tokens nor their digests ever print.
pub struct Tokens {
    tokens: Vec<Token>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.tokens.iter().map(|token| (&token.name, &token.scopes)))
            .finish()
    }
}

/// The token a caller presented, once found among the configured ones.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    token: &'a Token,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl Caller<'_> {
    /// The token's name from the file.
    pub fn name(&self) -> &str {
        &self.token.name
    }

    /// Whether the token may call a method that needs `scope`: it holds that scope, or
    /// `admin`.
    pub fn may(&self, scope: &Scope) -> bool {
        self.token.scopes.contains(&Scope::Admin) || self.token.scopes.contains(scope)
    }
}

impl Tokens {
    /// Reads the tokens file at `path`.
    pub fn load(path: &Path) -> Result<Self, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|message| TokensError::Invalid {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses the contents of a tokens file; the error says where and what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        // The message alone: toml's full report quotes the offending line, which may hold
        // a token.
        let file: TokensFile = toml::from_str(text).map_err(|error| {
            let at = error
                .span()
                .map(|span| format!("{}: ", position(text, &span)))
                .unwrap_or_default();
            format!("{at}{}", error.message().trim_end())
        })?;
        if file.tokens.is_empty() {
            return Err(
                "lists no tokens: add a [[tokens]] table with name, scopes and \
                        sha256 (or token)"
                    .to_owned(),
            );
        }
        let mut tokens: Vec<Token> = Vec::with_capacity(file.tokens.len());
        for spanned in file.tokens {
            let at = position(text, &spanned.span());
            let entry = spanned.into_inner();
            let name = entry.name.trim().to_owned();
            let invalid = |what: &str| {
                if name.is_empty() {
                    format!("{at}: a token {what}")
                } else {
                    format!("{at}: token {name:?} {what}")
                }
            };
            if name.is_empty() {
                return Err(invalid("has an empty name"));
            }
            if entry.scopes.is_empty() {
                return Err(invalid("lists no scopes"));
            }
            let digest = match (entry.token, entry.sha256) {
                (Some(secret), None) => {
                    if secret.expose_secret().chars().count() < MIN_TOKEN_CHARS {
                        return Err(invalid(&format!(
                            "is shorter than {MIN_TOKEN_CHARS} characters: use a long random \
                             one, e.g. `openssl rand -hex 32`"
                        )));
                    }
                    digest_of(secret.expose_secret().as_bytes())
                }
                (None, Some(Sha256Hex(digest))) => CtOutput::new(digest),
                (Some(_), Some(_)) => {
                    return Err(invalid("has both token and sha256: give one"));
                }
                (None, None) => return Err(invalid("has neither token nor sha256: give one")),
            };
            if let Some(other) = tokens.iter().find(|other| other.name == name) {
                return Err(invalid(&format!(
                    "is named like an earlier one ({:?})",
                    other.name
                )));
            }
            if let Some(other) = tokens.iter().find(|other| other.digest == digest) {
                return Err(invalid(&format!(
                    "has the same token as {:?}: give each caller its own",
                    other.name
                )));
            }
            tokens.push(Token {
                name,
                digest,
                scopes: entry.scopes.into_iter().collect(),
            });
        }
        Ok(Self { tokens })
    }

    /// How many tokens are configured.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether none is (a parsed file always has one).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The configured token `presented` is, if any. Every configured digest is compared,
    /// each in constant time, so the time taken says nothing about which one (nearly)
    /// matched.
    pub fn find(&self, presented: &[u8]) -> Option<Caller<'_>> {
        let digest = digest_of(presented);
        let mut found = None;
        for token in &self.tokens {
            if token.digest == digest {
                found = Some(Caller { token });
            }
        }
        found
    }
}

fn digest_of(token: &[u8]) -> CtOutput<Sha256> {
    CtOutput::new(Sha256::digest(token))
}

/// `line L, column C` of the byte offset where `span` starts.
fn position(text: &str, span: &Range<usize>) -> String {
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |last| last.chars().count())
        + 1;
    format!("line {line}, column {column}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "crm-sync-0123456789abcdef";

    fn sha256_hex(token: &str) -> String {
        Sha256::digest(token.as_bytes())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    fn error_of(text: &str) -> String {
        Tokens::parse(text).expect_err("an invalid file")
    }

    #[test]
    fn tokens_are_found_by_secret_or_by_digest_with_their_scopes() {
        let text = format!(
            r#"
            [[tokens]]
            name = "crm-sync"
            scopes = ["capture:write", "capture:read"]
            token = "{SECRET}"

            [[tokens]]
            name = "ops"
            scopes = ["admin"]
            sha256 = "{}"
            "#,
            sha256_hex("ops-token-fedcba9876543210")
        );
        let tokens = Tokens::parse(&text).expect("a valid file");
        assert_eq!(tokens.len(), 2);

        let crm = tokens.find(SECRET.as_bytes()).expect("crm-sync");
        assert_eq!(crm.name(), "crm-sync");
        assert!(crm.may(&Scope::write("capture")));
        assert!(!crm.may(&Scope::read("scoring")));
        assert!(!crm.may(&Scope::Admin));

        let ops = tokens
            .find(b"ops-token-fedcba9876543210")
            .expect("ops, by its digest");
        assert!(ops.may(&Scope::read("routing")) && ops.may(&Scope::Admin));

        assert!(tokens.find(b"crm-sync-0123456789abcdeF").is_none());
        assert!(tokens.find(b"").is_none());
        // The digest of the secret is not a token either.
        assert!(tokens.find(sha256_hex(SECRET).as_bytes()).is_none());
    }

    #[test]
    fn neither_tokens_nor_digests_print() {
        let text = format!(
            "[[tokens]]\nname = \"crm-sync\"\nscopes = [\"capture:read\"]\ntoken = \"{SECRET}\"\n"
        );
        let tokens = Tokens::parse(&text).expect("a valid file");
        let printed = format!("{tokens:?} {:?}", tokens.find(SECRET.as_bytes()));
        assert!(printed.contains("crm-sync"), "{printed}");
        assert!(!printed.contains(SECRET), "{printed}");
        assert!(!printed.contains(&sha256_hex(SECRET)[..16]), "{printed}");
    }

    #[test]
    fn a_bad_file_names_the_line_and_what_is_wrong_without_the_token() {
        let cases: [(String, &[&str]); 10] = [
            (
                "[[tokens]]\nname = \"a\"\nscopes = [\"capture:read\", \"captur:write\"]\nsha256 = \"x\"\n"
                    .to_owned(),
                &["line 3", "unknown scope \"captur:write\"", "capture, nurturing, routing, scoring"],
            ),
            (
                format!("[[tokens]]\nname = \"a\"\nscopes = [\"admin\"]\nsha256 = \"{SECRET}\"\n"),
                &["line 4", "sha256 must be 64 hexadecimal digits"],
            ),
            (
                format!("[[tokens]]\nname = \"a\"\nscope = [\"admin\"]\ntoken = \"{SECRET}\"\n"),
                &["line 3", "unknown field `scope`"],
            ),
            (
                format!("[[tokens]]\nscopes = [\"admin\"]\ntoken = \"{SECRET}\"\n"),
                &["line 1", "missing field `name`"],
            ),
            (
                "\n[[tokens]]\nname = \"a\"\nscopes = [\"admin\"]\ntoken = \"short-secret\"\n"
                    .to_owned(),
                &["line 2", "token \"a\"", "shorter than 16 characters"],
            ),
            (
                "[[tokens]]\nname = \"a\"\nscopes = [\"admin\"]\ntoken = 12345678901234567\n"
                    .to_owned(),
                &["line 4", "token must be a string"],
            ),
            (
                format!(
                    "[[tokens]]\nname = \"a\"\nscopes = [\"admin\"]\ntoken = \"{SECRET}\"\nsha256 = \"{}\"\n",
                    sha256_hex(SECRET)
                ),
                &["line 1", "token \"a\" has both token and sha256"],
            ),
            (
                "[[tokens]]\nname = \"a\"\nscopes = []\n".to_owned(),
                &["line 1", "token \"a\" lists no scopes"],
            ),
            (
                format!(
                    "[[tokens]]\nname = \"a\"\nscopes = [\"admin\"]\ntoken = \"{SECRET}\"\n\
                     [[tokens]]\nname = \"b\"\nscopes = [\"capture:read\"]\nsha256 = \"{}\"\n",
                    sha256_hex(SECRET)
                ),
                &["line 5", "token \"b\" has the same token as \"a\""],
            ),
            ("# nobody\n".to_owned(), &["missing field `tokens`"]),
        ];
        for (text, expected) in &cases {
            let error = error_of(text);
            for part in *expected {
                assert!(
                    error.contains(part),
                    "{error:?} lacks {part:?}, from:\n{text}"
                );
            }
            assert!(!error.contains(SECRET), "{error:?} shows the token");
            assert!(
                !error.contains("12345678901234567"),
                "{error:?} shows the token"
            );
        }
        assert!(error_of("tokens = []\n").contains("lists no tokens"));
        // An inline table puts a whole token on one line, which toml's own report quotes.
        let inline =
            format!("tokens = [{{ name = \"a\", scopes = [\"nope\"], token = \"{SECRET}\" }}]\n");
        let error = error_of(&inline);
        assert!(
            error.contains("line 1") && !error.contains(SECRET),
            "{error}"
        );
    }

    #[test]
    fn a_missing_file_is_named() {
        let error = Tokens::load(Path::new("/nonexistent/leadflow-tokens.toml"))
            .expect_err("no such file")
            .to_string();
        assert!(
            error.contains("/nonexistent/leadflow-tokens.toml"),
            "{error}"
        );
    }
}
