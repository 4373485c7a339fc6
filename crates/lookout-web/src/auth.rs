//! HTTP basic authentication against `basic_auth_users` (bcrypt hashes).
//!
//! * **Cache of successful logins**, as exporter-toolkit: the key is a SHA-256 digest of
//!   user, hash and password (the plaintext is never kept). Only successes are cached, so a
//!   flood of wrong passwords can neither fill the cache nor evict a good login from it; a
//!   changed hash gives new keys, so a revoked password stops working at once. At most
//!   [`CACHE_SIZE`] entries; when full, a tenth is dropped.
//! * **Same work for every uncached check.** A check runs one bcrypt verification per
//!   distinct cost among the configured hashes, cheapest first: the user's own hash at its
//!   cost, a dummy hash at every other cost. An unknown user gets dummies at every cost. So
//!   the time of a check does not depend on whether the user exists, on its cost, or on
//!   whether the password was right.
//! * **A bounded pool, off the async workers.** bcrypt runs on blocking threads, at most
//!   one per core at a time (first come, first served), and at most
//!   [`DEFAULT_MAX_PENDING`] checks (`--web.auth.max-pending-checks`) may wait or run at
//!   once. Past that, a request is answered `429 Too Many Requests` at once, without
//!   bcrypt, and counted in `lookout_web_auth_checks_rejected_total`. A flood of wrong
//!   passwords therefore slows only uncached checks, and a first login waits for at most
//!   the checks ahead of it: max-pending ÷ cores × the time of one check.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use http::HeaderValue;

/// Most cached successful logins.
pub const CACHE_SIZE: usize = 1000;

/// Default of `--web.auth.max-pending-checks`: password checks waiting for or running
/// bcrypt at once.
pub const DEFAULT_MAX_PENDING: usize = 64;

/// A well-formed bcrypt hash of nothing anyone sends, verified (and failed) at the costs
/// the user's own hash does not have. The cost field is replaced.
const DUMMY_HASH_TAIL: &str = "$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy";

/// The outcome of [`Authenticator::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A configured user with the right password.
    Allowed,
    /// No credentials, an unknown user or a wrong password.
    Denied,
    /// Too many checks pending (`--web.auth.max-pending-checks`); nothing was checked.
    Busy,
}

/// Checks `Authorization: Basic …` headers, caching successful logins.
#[derive(Debug)]
pub struct Authenticator {
    successes: Mutex<HashMap<[u8; 32], ()>>,
    workers: Arc<tokio::sync::Semaphore>,
    pending: AtomicUsize,
    max_pending: usize,
}

impl Default for Authenticator {
    fn default() -> Self {
        Authenticator::new(DEFAULT_MAX_PENDING)
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

/// The cost of a bcrypt hash (`$2y$10$…` → 10).
fn cost_of(hash: &str) -> Option<u32> {
    hash.get(4..6)?.parse().ok()
}

/// The hashes one uncached check verifies: one per distinct configured cost, the user's
/// own at its cost (when the user exists) and a dummy at every other.
fn plan(users: &BTreeMap<String, String>, own: Option<&str>) -> Vec<(String, bool)> {
    let costs: BTreeSet<u32> = users.values().filter_map(|h| cost_of(h)).collect();
    let own_cost = own.and_then(cost_of);
    costs
        .into_iter()
        .map(|cost| match own {
            Some(hash) if own_cost == Some(cost) => (hash.to_string(), true),
            _ => (format!("$2b${cost:02}{DUMMY_HASH_TAIL}"), false),
        })
        .collect()
}

/// Releases a pending slot when the check ends or its request is dropped.
struct PendingSlot<'a>(&'a AtomicUsize);

impl Drop for PendingSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Authenticator {
    /// An authenticator letting at most `max_pending` checks wait for or run bcrypt.
    pub fn new(max_pending: usize) -> Authenticator {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Authenticator {
            successes: Mutex::new(HashMap::new()),
            workers: Arc::new(tokio::sync::Semaphore::new(cores)),
            pending: AtomicUsize::new(0),
            max_pending: max_pending.max(1),
        }
    }

    /// The limit on pending checks (`--web.auth.max-pending-checks`).
    pub fn max_pending(&self) -> usize {
        self.max_pending
    }

    /// Whether `header` carries a valid user and password for `users`.
    pub async fn check(
        &self,
        users: &BTreeMap<String, String>,
        header: Option<&HeaderValue>,
    ) -> Verdict {
        let Some((user, password)) = header.and_then(parse_basic) else {
            return Verdict::Denied;
        };
        if users.is_empty() {
            return Verdict::Denied;
        }
        let own = users.get(&user).cloned();
        let key = own.as_deref().map(|h| cache_key(&user, h, &password));
        if let Some(key) = &key {
            let cached = self.cache().contains_key(key);
            if cached {
                return Verdict::Allowed;
            }
        }
        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.max_pending {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return Verdict::Busy;
        }
        let _slot = PendingSlot(&self.pending);
        let Ok(_worker) = self.workers.clone().acquire_owned().await else {
            return Verdict::Denied;
        };
        let hashes = plan(users, own.as_deref());
        let matched = tokio::task::spawn_blocking(move || {
            let mut matched = false;
            for (hash, real) in hashes {
                let ok = bcrypt::verify(&password, &hash).unwrap_or(false);
                matched |= ok && real;
            }
            matched
        })
        .await
        .unwrap_or(false);
        match key {
            Some(key) if matched => {
                let mut cache = self.cache();
                if cache.len() >= CACHE_SIZE {
                    let drop: Vec<[u8; 32]> = cache.keys().take(CACHE_SIZE / 10).copied().collect();
                    for k in drop {
                        cache.remove(&k);
                    }
                }
                cache.insert(key, ());
                Verdict::Allowed
            }
            _ => Verdict::Denied,
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], ()>> {
        self.successes.lock().unwrap_or_else(|e| e.into_inner())
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
        let right = basic("alice", "s3cret:with colon");
        assert_eq!(auth.check(&users, Some(&right)).await, Verdict::Allowed);
        // Cached now; still right.
        assert_eq!(auth.check(&users, Some(&right)).await, Verdict::Allowed);
        let wrong = basic("alice", "wrong");
        assert_eq!(auth.check(&users, Some(&wrong)).await, Verdict::Denied);
        let mallory = basic("mallory", "s3cret:with colon");
        assert_eq!(auth.check(&users, Some(&mallory)).await, Verdict::Denied);
        assert_eq!(auth.check(&users, None).await, Verdict::Denied);
        let bearer = HeaderValue::from_static("Bearer x");
        assert_eq!(auth.check(&users, Some(&bearer)).await, Verdict::Denied);
        // Failures are not cached.
        assert_eq!(auth.cache().len(), 1);
        // A changed hash invalidates the cached login.
        let other = BTreeMap::from([("alice".to_string(), bcrypt::hash("new", 4).unwrap())]);
        assert_eq!(auth.check(&other, Some(&right)).await, Verdict::Denied);
        let new = basic("alice", "new");
        assert_eq!(auth.check(&other, Some(&new)).await, Verdict::Allowed);
    }

    #[test]
    fn every_check_verifies_one_hash_per_cost_and_dummies_fail_at_full_cost() {
        let users = BTreeMap::from([
            ("a".to_string(), bcrypt::hash("x", 4).unwrap()),
            ("b".to_string(), bcrypt::hash("y", 5).unwrap()),
            ("c".to_string(), bcrypt::hash("z", 5).unwrap()),
        ]);
        let unknown = plan(&users, None);
        let known = plan(&users, users.get("b").map(String::as_str));
        let costs = |p: &[(String, bool)]| p.iter().map(|(h, _)| cost_of(h)).collect::<Vec<_>>();
        assert_eq!(costs(&unknown), vec![Some(4), Some(5)]);
        assert_eq!(costs(&known), costs(&unknown));
        assert_eq!(known.iter().filter(|(_, real)| *real).count(), 1);
        for (hash, real) in &unknown {
            assert!(!real);
            // A dummy must be a valid hash: an error would skip the work.
            assert_eq!(bcrypt::verify("x", hash).ok(), Some(false), "{hash}");
        }
    }

    #[tokio::test]
    async fn past_the_pending_limit_checks_are_refused_unchecked() {
        let users = BTreeMap::from([("a".to_string(), bcrypt::hash("x", 4).unwrap())]);
        let auth = Authenticator::new(1);
        auth.pending.store(1, Ordering::Release);
        let header = basic("a", "x");
        assert_eq!(auth.check(&users, Some(&header)).await, Verdict::Busy);
        auth.pending.store(0, Ordering::Release);
        assert_eq!(auth.check(&users, Some(&header)).await, Verdict::Allowed);
    }
}
