//! Redis connections for hot state and events, with every key under one prefix so that
//! several installations (or tests) share a server without seeing each other's keys.

use redis::aio::ConnectionManager;
use secrecy::{ExposeSecret, SecretString};

use crate::StorageError;

/// The prefix every leadflow key carries, e.g. `leadflow:` in production or a unique
/// prefix per test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisKeySpace {
    prefix: String,
}

impl RedisKeySpace {
    /// A key space whose keys all start with `prefix` followed by a colon.
    pub fn new(prefix: impl Into<String>) -> Self {
        let mut prefix = prefix.into();
        if !prefix.is_empty() && !prefix.ends_with(':') {
            prefix.push(':');
        }
        Self { prefix }
    }

    /// The full key for `name` inside this key space.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The prefix, with its trailing colon.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// A shared, self-reconnecting Redis connection bound to a key space.
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    key_space: RedisKeySpace,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RedisStore")
            .field("key_space", &self.key_space)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to Redis at `url`. Fails if the server cannot be reached now; once
    /// connected, the manager reconnects by itself after a Redis restart.
    pub async fn connect(
        url: &SecretString,
        key_space: RedisKeySpace,
    ) -> Result<Self, StorageError> {
        let client = redis::Client::open(url.expose_secret())?;
        let connection = ConnectionManager::new(client).await?;
        Ok(Self {
            connection,
            key_space,
        })
    }

    /// A handle to the connection; cheap to clone, commands are pipelined over one socket.
    pub fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }

    /// The key space every key of this store lives in.
    pub fn key_space(&self) -> &RedisKeySpace {
        &self.key_space
    }

    /// Answers whether Redis serves this connection right now.
    pub async fn ping(&self) -> Result<(), StorageError> {
        let mut connection = self.connection.clone();
        let _: String = redis::cmd("PING").query_async(&mut connection).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_space_adds_one_separator() {
        assert_eq!(
            RedisKeySpace::new("leadflow").key("score:1"),
            "leadflow:score:1"
        );
        assert_eq!(RedisKeySpace::new("t1:").key("x"), "t1:x");
        assert_eq!(RedisKeySpace::new("").key("x"), "x");
    }
}
