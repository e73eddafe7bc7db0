//! The mock's mutable world: pending consents, authorization codes, grants and their tokens,
//! rate-limit windows, queued faults and refresh concurrency counters.
//!
//! Everything here is synchronous and runs under one `std::sync::Mutex`; handlers copy out
//! what they need and never hold the lock across an await.

use std::collections::{HashMap, VecDeque};

use ring::rand::SystemRandom;

use super::config::{MockConfig, PkceMode, Rotation};
use super::ids;
use super::{Endpoint, Fault, TokenSet};

/// How long an unanswered consent page stays usable; TikTok does not document it.
const PENDING_TTL_S: i64 = 3_600;
const RATE_WINDOW_MS: i64 = 60_000;

pub(crate) const MALFORMED: &str = "The request parameters are malformed.";
pub(crate) const REDIRECT_MISMATCH: &str = "Redirect_uri is not matched with the uri when requesting code.";
pub(crate) const PKCE_INVALID: &str = "Code verifier or code challenge is invalid.";

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub value: String,
    /// The mode in force at authorize time decides how the verifier is checked later.
    pub mode: PkceMode,
}

/// A validated authorize request waiting for the consent decision.
#[derive(Clone, Debug)]
pub(crate) struct PendingAuth {
    pub client_key: String,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    pub state: Option<String>,
    pub challenge: Option<Challenge>,
    pub created_at: i64,
}

#[derive(Clone, Debug)]
struct CodeRecord {
    client_key: String,
    redirect_uri: String,
    scopes: Vec<String>,
    open_id: String,
    challenge: Option<Challenge>,
    issued_at: i64,
    used: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct Grant {
    pub client_key: String,
    pub open_id: String,
    pub scopes: Vec<String>,
    /// Anchored to the first issuance: refreshing never extends it.
    refresh_expires_at: i64,
    revoked: bool,
    refresh_count: u64,
}

#[derive(Clone, Debug)]
struct AccessRecord {
    grant: u64,
    expires_at: i64,
    revoked: bool,
}

#[derive(Clone, Debug)]
struct RefreshRecord {
    grant: u64,
    /// Only the newest refresh token of a grant works.
    current: bool,
}

/// An OAuth-style failure: `{"error","error_description","log_id"}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OAuthError {
    pub error: &'static str,
    pub description: String,
}

impl OAuthError {
    pub fn new(error: &'static str, description: impl Into<String>) -> Self {
        Self {
            error,
            description: description.into(),
        }
    }

    pub fn malformed() -> Self {
        Self::new("invalid_request", MALFORMED)
    }
}

#[derive(Default)]
pub(crate) struct State {
    pub config: MockConfig,
    pending: HashMap<String, PendingAuth>,
    codes: HashMap<String, CodeRecord>,
    grants: HashMap<u64, Grant>,
    next_grant: u64,
    access: HashMap<String, AccessRecord>,
    refresh: HashMap<String, RefreshRecord>,
    rate: HashMap<(Endpoint, String), VecDeque<i64>>,
    faults: HashMap<Endpoint, VecDeque<(Fault, u32)>>,
    refresh_calls: usize,
    refreshes_in_flight: HashMap<String, usize>,
    max_concurrent_refreshes: usize,
}

impl State {
    pub fn new(config: MockConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    // === consent and codes ===

    pub fn add_pending(&mut self, rng: &SystemRandom, now: i64, pending: PendingAuth) -> String {
        self.pending.retain(|_, p| now - p.created_at < PENDING_TTL_S);
        let id = ids::request_id(rng);
        self.pending.insert(id.clone(), pending);
        id
    }

    /// Single use: the entry is gone whatever the decision turns out to be.
    pub fn take_pending(&mut self, now: i64, id: &str) -> Option<PendingAuth> {
        self.pending.remove(id).filter(|p| now - p.created_at < PENDING_TTL_S)
    }

    pub fn issue_code(
        &mut self,
        rng: &SystemRandom,
        now: i64,
        pending: &PendingAuth,
        open_id: &str,
        scopes: Vec<String>,
    ) -> String {
        let code = ids::auth_code(rng);
        self.codes.insert(
            code.clone(),
            CodeRecord {
                client_key: pending.client_key.clone(),
                redirect_uri: pending.redirect_uri.clone(),
                scopes,
                open_id: open_id.to_owned(),
                challenge: pending.challenge.clone(),
                issued_at: now,
                used: false,
            },
        );
        code
    }

    pub fn exchange_code(
        &mut self,
        rng: &SystemRandom,
        now: i64,
        client_key: &str,
        code: &str,
        redirect_uri: Option<&str>,
        verifier: Option<&str>,
    ) -> Result<TokenSet, OAuthError> {
        let code_ttl = self.config.code_ttl_s;
        let Some(rec) = self.codes.get_mut(code) else {
            return Err(OAuthError::new("invalid_grant", "Authorization code is invalid."));
        };
        if rec.client_key != client_key {
            return Err(OAuthError::new(
                "invalid_grant",
                "Authorization code was not issued to this client.",
            ));
        }
        if rec.used {
            return Err(OAuthError::new("invalid_grant", "Authorization code has been used."));
        }
        if now - rec.issued_at >= code_ttl {
            return Err(OAuthError::new("invalid_grant", "Authorization code is expired."));
        }
        // Consumed from here on even if a later check fails: a client retrying the same code
        // (for instance after its own timeout) must learn it cannot.
        rec.used = true;
        let rec = rec.clone();
        if redirect_uri != Some(rec.redirect_uri.as_str()) {
            return Err(OAuthError::new("invalid_request", REDIRECT_MISMATCH));
        }
        if let Some(challenge) = &rec.challenge {
            let ok = verifier.is_some_and(|v| pkce_matches(challenge, v));
            if !ok {
                return Err(OAuthError::new("invalid_request", PKCE_INVALID));
            }
        }
        let scopes: Vec<&str> = rec.scopes.iter().map(String::as_str).collect();
        Ok(self.create_grant(rng, now, &rec.client_key, &rec.open_id, &scopes))
    }

    // === grants and tokens ===

    pub fn create_grant(
        &mut self,
        rng: &SystemRandom,
        now: i64,
        client_key: &str,
        open_id: &str,
        scopes: &[&str],
    ) -> TokenSet {
        self.next_grant += 1;
        let id = self.next_grant;
        let grant = Grant {
            client_key: client_key.to_owned(),
            open_id: open_id.to_owned(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            refresh_expires_at: now + self.config.refresh_ttl_s,
            revoked: false,
            refresh_count: 0,
        };
        self.grants.insert(id, grant);
        let refresh_token = ids::token(rng, "rft");
        self.refresh.insert(
            refresh_token.clone(),
            RefreshRecord {
                grant: id,
                current: true,
            },
        );
        self.token_set(rng, now, id, refresh_token)
    }

    fn token_set(&mut self, rng: &SystemRandom, now: i64, grant_id: u64, refresh_token: String) -> TokenSet {
        let access_ttl = self.config.access_ttl_s;
        let access_token = ids::token(rng, "act");
        self.access.insert(
            access_token.clone(),
            AccessRecord {
                grant: grant_id,
                expires_at: now + access_ttl,
                revoked: false,
            },
        );
        let (open_id, scope, refresh_expires_in) = match self.grants.get(&grant_id) {
            Some(g) => (g.open_id.clone(), g.scopes.join(","), g.refresh_expires_at - now),
            None => (String::new(), String::new(), 0),
        };
        TokenSet {
            access_token,
            refresh_token,
            expires_in: access_ttl,
            refresh_expires_in,
            open_id,
            scope,
        }
    }

    /// Owner of a refresh token without judging its validity, so concurrency is counted per
    /// user even for calls that will fail.
    pub fn refresh_owner(&self, refresh_token: &str) -> Option<String> {
        let rec = self.refresh.get(refresh_token)?;
        self.grants.get(&rec.grant).map(|g| g.open_id.clone())
    }

    pub fn refresh(
        &mut self,
        rng: &SystemRandom,
        now: i64,
        client_key: &str,
        refresh_token: &str,
    ) -> Result<TokenSet, OAuthError> {
        let dead = || OAuthError::new("invalid_grant", "Refresh token is invalid or expired.");
        let rec = self.refresh.get(refresh_token).cloned().ok_or_else(dead)?;
        let rotation = self.config.rotation;
        let keep_old = self.config.keep_old_access_token_after_refresh;
        let grant = self.grants.get_mut(&rec.grant).ok_or_else(dead)?;
        if !rec.current || grant.revoked || grant.client_key != client_key || now >= grant.refresh_expires_at {
            return Err(dead());
        }
        grant.refresh_count += 1;
        let rotate = match rotation {
            Rotation::Always => true,
            Rotation::SometimesSame => grant.refresh_count % 2 == 0,
        };
        let next_refresh = if rotate {
            if let Some(old) = self.refresh.get_mut(refresh_token) {
                old.current = false;
            }
            let new = ids::token(rng, "rft");
            self.refresh.insert(
                new.clone(),
                RefreshRecord {
                    grant: rec.grant,
                    current: true,
                },
            );
            new
        } else {
            refresh_token.to_owned()
        };
        if !keep_old {
            for a in self.access.values_mut().filter(|a| a.grant == rec.grant) {
                a.revoked = true;
            }
        }
        Ok(self.token_set(rng, now, rec.grant, next_refresh))
    }

    /// Revokes the whole grant the access token belongs to.
    pub fn revoke(&mut self, now: i64, client_key: &str, token: &str) -> Result<(), OAuthError> {
        let invalid = || OAuthError::new("invalid_grant", "Access token is invalid or expired.");
        let rec = self.access.get(token).ok_or_else(invalid)?;
        if rec.revoked || now >= rec.expires_at {
            return Err(invalid());
        }
        let grant = self.grants.get_mut(&rec.grant).ok_or_else(invalid)?;
        if grant.revoked || grant.client_key != client_key {
            return Err(invalid());
        }
        grant.revoked = true;
        Ok(())
    }

    /// The grant behind a usable access token.
    pub fn authenticate(&self, now: i64, access_token: &str) -> Option<Grant> {
        let rec = self.access.get(access_token)?;
        if rec.revoked || now >= rec.expires_at {
            return None;
        }
        let grant = self.grants.get(&rec.grant)?;
        if grant.revoked || now >= grant.refresh_expires_at {
            return None;
        }
        Some(grant.clone())
    }

    pub fn revoke_user_grants(&mut self, open_id: &str) {
        for g in self.grants.values_mut().filter(|g| g.open_id == open_id) {
            g.revoked = true;
        }
    }

    pub fn live_grants(&self, now: i64, open_id: &str) -> usize {
        self.grants
            .values()
            .filter(|g| g.open_id == open_id && !g.revoked && now < g.refresh_expires_at)
            .count()
    }

    // === rate limits and faults ===

    /// Sliding window; rejected calls do not count against the window.
    pub fn rate_allow(&mut self, now_ms: i64, endpoint: Endpoint, client_key: &str) -> bool {
        let limit = self.config.rate_limit_per_min as usize;
        let window = self.rate.entry((endpoint, client_key.to_owned())).or_default();
        while window.front().is_some_and(|t| now_ms - *t >= RATE_WINDOW_MS) {
            window.pop_front();
        }
        if window.len() >= limit {
            return false;
        }
        window.push_back(now_ms);
        true
    }

    pub fn push_fault(&mut self, endpoint: Endpoint, fault: Fault, times: u32) {
        if times > 0 {
            self.faults.entry(endpoint).or_default().push_back((fault, times));
        }
    }

    pub fn take_fault(&mut self, endpoint: Endpoint) -> Option<Fault> {
        let queue = self.faults.get_mut(&endpoint)?;
        let (fault, left) = queue.front_mut()?;
        let fault = fault.clone();
        *left -= 1;
        if *left == 0 {
            queue.pop_front();
        }
        Some(fault)
    }

    // === refresh concurrency ===

    pub fn enter_refresh(&mut self, open_id: &str) {
        self.refresh_calls += 1;
        let n = self.refreshes_in_flight.entry(open_id.to_owned()).or_default();
        *n += 1;
        self.max_concurrent_refreshes = self.max_concurrent_refreshes.max(*n);
    }

    pub fn exit_refresh(&mut self, open_id: &str) {
        if let Some(n) = self.refreshes_in_flight.get_mut(open_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.refreshes_in_flight.remove(open_id);
            }
        }
    }

    pub fn refresh_calls(&self) -> usize {
        self.refresh_calls
    }

    pub fn max_concurrent_refreshes(&self) -> usize {
        self.max_concurrent_refreshes
    }
}

/// A verifier must be RFC 7636-shaped and hash to the stored challenge in the stored mode.
fn pkce_matches(challenge: &Challenge, verifier: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if !well_formed {
        return false;
    }
    let digest = ids::sha256(verifier.as_bytes());
    let hex = ids::lower_hex(&digest);
    let b64 = ids::base64url(&digest);
    match challenge.mode {
        PkceMode::RequiredHex => challenge.value == hex,
        PkceMode::RequiredBase64Url => challenge.value == b64,
        PkceMode::VerifyIfPresent | PkceMode::Ignore => challenge.value == hex || challenge.value == b64,
    }
}
