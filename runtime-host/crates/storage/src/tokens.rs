//! API tokens: the bearer secrets the query API authenticates its callers with, one
//! organisation each.
//!
//! A secret is `weir_` followed by 32 random bytes from the operating system, in hex. It exists
//! in clear only in the answer of [`Storage::create_token`]: the `api_tokens` row keeps its
//! SHA-256, so a copy of the database (a backup, a replica, a leaked dump) holds no usable
//! credential, and a lost secret cannot be shown again, only replaced. A presented secret is
//! hashed and its row found by that hash. Revoking sets `revoked_at`; the row stays, so listings
//! show it and its id is never reused.
//!
//! Caching the answers (so that each API request does not query PostgreSQL) is the caller's
//! business: see the host's `api::auth`.

use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::error::{Result, StorageError};
use crate::model::{NewToken, TokenInfo};
use crate::postgres::Storage;
use crate::timestamp::from_system_time;

/// What every secret starts with, so that a leaked one is recognisable (secret scanners, logs).
pub const TOKEN_PREFIX: &str = "weir_";
/// Random bytes in a secret: 256 bits, beyond guessing.
const SECRET_BYTES: usize = 32;

/// The SHA-256 of `secret`: what `api_tokens` stores and looks secrets up by, and a key callers
/// may cache answers under without keeping secrets in memory.
pub fn token_hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Whether `secret` has the shape of a secret this module issues: the prefix, then 64
/// lowercase hex digits.
fn well_formed(secret: &str) -> bool {
    secret.strip_prefix(TOKEN_PREFIX).is_some_and(|hex| {
        hex.len() == SECRET_BYTES * 2
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

impl Storage {
    /// Creates a token for `org`, with an optional `name` for people (what it is for). The
    /// returned [`NewToken::secret`] is the only copy of the secret: only its hash is stored.
    pub async fn create_token(&self, org: &str, name: Option<&str>) -> Result<NewToken> {
        let mut random = [0u8; SECRET_BYTES];
        getrandom::fill(&mut random).map_err(|err| {
            StorageError::Unavailable(format!(
                "the operating system's random number generator failed: {err}"
            ))
        })?;
        let secret = format!("{TOKEN_PREFIX}{}", hex::encode(random));
        let hash = token_hash(&secret);

        let client = self.client().await?;
        let insert = client
            .prepare_cached(
                "INSERT INTO api_tokens (org, name, token_hash) VALUES ($1, $2, $3) RETURNING id",
            )
            .await?;
        let row = client
            .query_one(&insert, &[&org, &name, &hash.as_slice()])
            .await?;
        Ok(NewToken {
            id: row.try_get(0)?,
            org: org.to_owned(),
            name: name.map(str::to_owned),
            secret,
        })
    }

    /// The token whose secret is `secret`, revoked or not; `None` when no token has it. A string
    /// that is not shaped like a secret is answered `None` without a query.
    pub async fn find_token(&self, secret: &str) -> Result<Option<TokenInfo>> {
        if !well_formed(secret) {
            return Ok(None);
        }
        // An ordinary index lookup, not a constant-time comparison, and that is safe: the
        // database compares SHA-256 hashes, not secrets. Timing could at best reveal how much of
        // a stored *hash* matches the hash of what the caller sent; turning that into a secret
        // would take a SHA-256 preimage, and the secret has 256 random bits besides.
        let hash = token_hash(secret);
        let client = self.client().await?;
        let select = client
            .prepare_cached(
                "SELECT id, org, name, created_at, revoked_at IS NOT NULL \
                 FROM api_tokens WHERE token_hash = $1",
            )
            .await?;
        let row = client.query_opt(&select, &[&hash.as_slice()]).await?;
        row.as_ref().map(token_info).transpose()
    }

    /// Whether token `id` exists and is not revoked: what a long-lived session (a live event
    /// stream) re-checks without keeping the secret.
    pub async fn token_is_active(&self, id: i64) -> Result<bool> {
        let client = self.client().await?;
        let select = client
            .prepare_cached("SELECT revoked_at IS NULL FROM api_tokens WHERE id = $1")
            .await?;
        let row = client.query_opt(&select, &[&id]).await?;
        Ok(match row {
            Some(row) => row.try_get(0)?,
            None => false,
        })
    }

    /// Every token, revoked ones included, of `org` (or of every organisation when `None`),
    /// oldest first.
    pub async fn list_tokens(&self, org: Option<&str>) -> Result<Vec<TokenInfo>> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(
                "SELECT id, org, name, created_at, revoked_at IS NOT NULL \
                 FROM api_tokens WHERE $1::text IS NULL OR org = $1 ORDER BY id",
            )
            .await?;
        let rows = client.query(&select, &[&org]).await?;
        rows.iter().map(token_info).collect()
    }

    /// Revokes token `id`: from now on [`Storage::find_token`] reports it revoked. Returns
    /// whether this call revoked it (`false` when there is no such token or it was already
    /// revoked; a second revocation keeps the first time).
    pub async fn revoke_token(&self, id: i64) -> Result<bool> {
        let client = self.client().await?;
        let update = client
            .prepare_cached(
                "UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
            )
            .await?;
        Ok(client.execute(&update, &[&id]).await? == 1)
    }
}

/// A row of `SELECT id, org, name, created_at, revoked_at IS NOT NULL`.
fn token_info(row: &tokio_postgres::Row) -> Result<TokenInfo> {
    let created_at: SystemTime = row.try_get(3)?;
    Ok(TokenInfo {
        id: row.try_get(0)?,
        org: row.try_get(1)?,
        name: row.try_get(2)?,
        created_at_ms: from_system_time(created_at),
        revoked: row.try_get(4)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_issued_shapes_are_well_formed() {
        let issued = format!("weir_{}", "0123456789abcdef".repeat(4));
        assert!(well_formed(&issued));
        assert!(!well_formed(&issued[..issued.len() - 1]), "too short");
        assert!(!well_formed(&format!("{issued}0")), "too long");
        assert!(
            !well_formed(&format!("weir_{}", "0123456789ABCDEF".repeat(4))),
            "upper case"
        );
        assert!(!well_formed(&issued.replace("weir_", "weer_")), "prefix");
        assert!(!well_formed(&format!("weir_{}", "g".repeat(64))), "not hex");
        assert!(!well_formed(""));
    }

    #[test]
    fn token_hash_is_the_sha256_of_the_secret() {
        assert_eq!(
            hex::encode(token_hash("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
