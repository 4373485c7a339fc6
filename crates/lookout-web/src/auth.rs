//! HTTP basic authentication against `basic_auth_users` (bcrypt hashes).
//!
//! bcrypt is slow on purpose (cost 10 is tens of milliseconds), so, like exporter-toolkit,
//! each verdict is cached: the key is a SHA-256 digest of user, hash and password (the
//! plaintext password is never kept), the value whether it matched. A changed hash in the
//! configuration gives new keys, so a revoked password stops working at once. The cache is
//! bounded; when full, a tenth of it is dropped. bcrypt runs on the blocking pool, one at a
//! time, so a flood of wrong passwords costs one core at most.
//!
//! An unknown user is checked against a configured user's hash anyway and then refused, so
//! the response time does not tell which user names exist. bcrypt's own comparison is
//! constant-time.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use http::HeaderValue;

/// Most cached verdicts.
const CACHE_SIZE: usize = 1000;

/// Checks `Authorization: Basic …` headers, caching bcrypt verdicts.
#[derive(Debug)]
pub struct Authenticator {
    verdicts: Mutex<HashMap<[u8; 32], bool>>,
    bcrypt: Arc<tokio::sync::Semaphore>,
}

impl Default for Authenticator {
    fn default() -> Self {
        Authenticator {
            verdicts: Mutex::new(HashMap::new()),
            bcrypt: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }
}

/// Splits a `Basic` authorization header into user and password.
pub fn parse_basic(header: &HeaderValue) -> Option<(String, String)> {
    let value = header.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn cache_key(user: &str, hash: &str, password: &str) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [user, hash, password] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(ctx.finish().as_ref());
    key
}

impl Authenticator {
    /// Whether `header` carries a valid user and password for `users`.
    pub async fn check(
        &self,
        users: &BTreeMap<String, String>,
        header: Option<&HeaderValue>,
    ) -> bool {
        let Some((user, password)) = header.and_then(parse_basic) else {
            return false;
        };
        let (hash, known) = match users.get(&user) {
            Some(hash) => (hash.clone(), true),
            None => match users.values().next() {
                Some(hash) => (hash.clone(), false),
                None => return false,
            },
        };
        let key = cache_key(&user, &hash, &password);
        let cached = self
            .verdicts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .copied();
        let matched = match cached {
            Some(v) => v,
            None => {
                let Ok(_permit) = self.bcrypt.clone().acquire_owned().await else {
                    return false;
                };
                let verdict = tokio::task::spawn_blocking(move || {
                    bcrypt::verify(password, &hash).unwrap_or(false)
                })
                .await
                .unwrap_or(false);
                let mut verdicts = self.verdicts.lock().unwrap_or_else(|e| e.into_inner());
                if verdicts.len() >= CACHE_SIZE {
                    let drop: Vec<[u8; 32]> =
                        verdicts.keys().take(CACHE_SIZE / 10).copied().collect();
                    for k in drop {
                        verdicts.remove(&k);
                    }
                }
                verdicts.insert(key, verdict);
                verdict
            }
        };
        matched && known
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> HeaderValue {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {token}")).unwrap()
    }

    #[tokio::test]
    async fn right_password_passes_and_others_do_not() {
        let hash = bcrypt::hash("s3cret:with colon", 4).unwrap();
        let users = BTreeMap::from([("alice".to_string(), hash)]);
        let auth = Authenticator::default();
        assert!(
            auth.check(&users, Some(&basic("alice", "s3cret:with colon")))
                .await
        );
        // Cached now; still right.
        assert!(
            auth.check(&users, Some(&basic("alice", "s3cret:with colon")))
                .await
        );
        assert!(!auth.check(&users, Some(&basic("alice", "wrong"))).await);
        assert!(
            !auth
                .check(&users, Some(&basic("mallory", "s3cret:with colon")))
                .await
        );
        assert!(!auth.check(&users, None).await);
        assert!(
            !auth
                .check(&users, Some(&HeaderValue::from_static("Bearer x")))
                .await
        );
        // A changed hash invalidates the cached verdict.
        let other = BTreeMap::from([("alice".to_string(), bcrypt::hash("new", 4).unwrap())]);
        assert!(
            !auth
                .check(&other, Some(&basic("alice", "s3cret:with colon")))
                .await
        );
        assert!(auth.check(&other, Some(&basic("alice", "new"))).await);
        assert!(auth.verdicts.lock().unwrap().len() <= CACHE_SIZE);
    }
}
