//! Admin API keys: made, listed, revoked and checked.
//!
//! A key reads `mgk_<id>_<secret>`. The id (12 characters) is public: lists, audit records
//! and `apikey revoke` name it. The secret (32 characters, about 190 random bits) is shown
//! once and stored only as its SHA-256: a random secret of that size cannot be guessed
//! from its digest, so a slow password hash would only slow every request. Digests are
//! compared in constant time. Every request reads the key's row, so a revocation, an
//! expiry or a changed allow-list is in force on the next request.

use super::store::NewKeyRow;
use super::{constant_time_eq, Directory, DirectoryError, Result};
use serde::Serialize;

/// The start of every key.
pub const KEY_PREFIX: &str = "mgk_";
const ID_LEN: usize = 12;
const SECRET_LEN: usize = 32;

/// A key to make.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    /// `None`: an operator key.
    pub tenant: Option<String>,
    pub description: String,
    /// Last day (inclusive, UTC) it works.
    pub expires: Option<chrono::NaiveDate>,
    /// If not empty, it works only from these networks.
    pub allow_ips: Vec<ipnet::IpNet>,
}

/// A key as listed (never its secret).
#[derive(Debug, Clone, Serialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct ApiKey {
    pub id: String,
    /// `operator` or `tenant`.
    pub scope: String,
    /// The tenant of a tenant-admin key.
    pub tenant: Option<String>,
    pub description: String,
    /// Last day (inclusive, UTC) the key works.
    pub expires: Option<chrono::NaiveDate>,
    /// Networks the key may be used from (empty: any).
    pub allow_ips: Vec<String>,
    /// Unix seconds.
    pub created_at: i64,
    pub created_by: String,
    /// Unix seconds; a revoked key is refused.
    pub revoked_at: Option<i64>,
    /// Unix seconds, to the minute.
    pub last_used_at: Option<i64>,
}

/// Why a presented key is refused (all are `401` to the client, logged apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefusal {
    Malformed,
    Unknown,
    Revoked,
    Expired,
    AddressNotAllowed,
}

impl KeyRefusal {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyRefusal::Malformed => "malformed",
            KeyRefusal::Unknown => "unknown",
            KeyRefusal::Revoked => "revoked",
            KeyRefusal::Expired => "expired",
            KeyRefusal::AddressNotAllowed => "address_not_allowed",
        }
    }
}

fn random(n: usize, alphabet: &[u8]) -> String {
    use rand::Rng;
    let mut rng = rand::rngs::OsRng;
    (0..n).map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char).collect()
}

fn digest(secret: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(secret.as_bytes()).into()
}

/// Splits `mgk_<id>_<secret>` (anything else: `None`).
fn split_key(key: &str) -> Option<(&str, &str)> {
    let (id, secret) = key.strip_prefix(KEY_PREFIX)?.split_once('_')?;
    let ok = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_alphanumeric());
    (ok(id, ID_LEN) && ok(secret, SECRET_LEN)).then_some((id, secret))
}

impl Directory {
    /// Makes a key; returns it and the whole key string, which is shown once.
    pub async fn add_api_key(&self, new: &NewKey) -> Result<(ApiKey, String)> {
        if new.description.chars().count() > 200 || new.description.chars().any(char::is_control) {
            return Err(DirectoryError::Invalid("the description has at most 200 characters, without control characters".into()));
        }
        const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        const MIXED: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let id = random(ID_LEN, LOWER);
        let secret = random(SECRET_LEN, MIXED);
        let row = NewKeyRow {
            id: id.clone(),
            secret_sha256: digest(&secret),
            tenant: new.tenant.clone(),
            description: new.description.clone(),
            expires: new.expires,
            allow_ips: new.allow_ips.iter().map(|n| n.trunc().to_string()).collect(),
        };
        let key = self.store.add_api_key(&self.stamp(), &row).await?;
        Ok((key, format!("{KEY_PREFIX}{id}_{secret}")))
    }

    /// Keys of one tenant (`Some`), or every key (`None`), newest first.
    pub async fn list_api_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKey>> {
        self.store.list_api_keys(tenant).await
    }

    /// One key by id.
    pub async fn api_key(&self, id: &str) -> Result<Option<ApiKey>> {
        Ok(self.store.api_key(id).await?.map(|(key, _)| key))
    }

    /// Revokes a key: refused from the next request on. Revoking twice is an error.
    pub async fn revoke_api_key(&self, id: &str) -> Result<ApiKey> {
        self.store.revoke_api_key(&self.stamp(), id).await
    }

    /// Checks a presented key: its digest, revocation, expiry (`today`, UTC) and the
    /// client's address. Marks it used (at most once a minute).
    pub async fn verify_api_key(
        &self,
        presented: &str,
        client: std::net::IpAddr,
        today: chrono::NaiveDate,
    ) -> Result<std::result::Result<ApiKey, KeyRefusal>> {
        let Some((id, secret)) = split_key(presented) else { return Ok(Err(KeyRefusal::Malformed)) };
        let Some((key, stored)) = self.store.api_key(id).await? else {
            // Spend the same digest work as for a known id.
            let _ = constant_time_eq(&digest(secret), &[0u8; 32]);
            return Ok(Err(KeyRefusal::Unknown));
        };
        if !constant_time_eq(&digest(secret), &stored) {
            return Ok(Err(KeyRefusal::Unknown));
        }
        if key.revoked_at.is_some() {
            return Ok(Err(KeyRefusal::Revoked));
        }
        if key.expires.is_some_and(|d| d < today) {
            return Ok(Err(KeyRefusal::Expired));
        }
        let client = client.to_canonical();
        let allowed = key.allow_ips.is_empty()
            || key.allow_ips.iter().filter_map(|n| n.parse::<ipnet::IpNet>().ok()).any(|n| n.contains(&client));
        if !allowed {
            return Ok(Err(KeyRefusal::AddressNotAllowed));
        }
        let now = self.now_secs();
        if key.last_used_at.is_none_or(|t| now - t >= 60) {
            self.store.mark_api_key_used(id, now - now % 60).await?;
        }
        Ok(Ok(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_are_checked_revoked_expired_and_bound_to_networks() {
        let t = tempfile::tempdir().unwrap();
        let d = Directory::open(&t.path().join("d.sqlite")).await.unwrap();
        d.add_tenant("contoso").await.unwrap();
        let today = chrono::NaiveDate::from_ymd_opt(2027, 1, 10).unwrap();
        let local: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let (op, op_key) = d.add_api_key(&NewKey::default()).await.unwrap();
        assert_eq!(op.scope, "operator");
        assert!(op_key.starts_with(KEY_PREFIX) && op_key.len() == 4 + 12 + 1 + 32);
        assert_eq!(d.verify_api_key(&op_key, local, today).await.unwrap().unwrap().id, op.id);
        // One character off, a malformed key, an unknown id.
        let mut wrong = op_key.clone();
        let last = if wrong.ends_with('a') { "b" } else { "a" };
        wrong.replace_range(wrong.len() - 1.., last);
        assert_eq!(d.verify_api_key(&wrong, local, today).await.unwrap(), Err(KeyRefusal::Unknown));
        assert_eq!(d.verify_api_key("Bearer x", local, today).await.unwrap(), Err(KeyRefusal::Malformed));
        let other = format!("{KEY_PREFIX}{}_{}", "a".repeat(12), "b".repeat(32));
        assert_eq!(d.verify_api_key(&other, local, today).await.unwrap(), Err(KeyRefusal::Unknown));

        let new = NewKey {
            tenant: Some("contoso".into()),
            description: "MSP".into(),
            expires: Some(today),
            allow_ips: vec!["10.1.2.3/16".parse().unwrap()],
        };
        let (k, key) = d.add_api_key(&new).await.unwrap();
        assert_eq!((k.scope.as_str(), k.allow_ips.clone()), ("tenant", vec!["10.1.0.0/16".to_string()]));
        assert_eq!(d.verify_api_key(&key, local, today).await.unwrap(), Err(KeyRefusal::AddressNotAllowed));
        let inside: std::net::IpAddr = "10.1.200.1".parse().unwrap();
        assert!(d.verify_api_key(&key, inside, today).await.unwrap().is_ok(), "the last day is included");
        assert_eq!(d.verify_api_key(&key, inside, today.succ_opt().unwrap()).await.unwrap(), Err(KeyRefusal::Expired));
        d.revoke_api_key(&k.id).await.unwrap();
        assert_eq!(d.verify_api_key(&key, inside, today).await.unwrap(), Err(KeyRefusal::Revoked));
        assert!(matches!(d.revoke_api_key(&k.id).await, Err(DirectoryError::Exists(_))));
        assert!(matches!(d.add_api_key(&NewKey { tenant: Some("nope".into()), ..Default::default() }).await, Err(DirectoryError::NotFound(_))));
        assert_eq!(d.list_api_keys(Some("contoso")).await.unwrap().len(), 1);
        assert_eq!(d.list_api_keys(None).await.unwrap().len(), 2);
    }
}
