//! Resource limits per caller: how often and how many at once an agency or a person may call,
//! how fast an agency's records are taken in, and how many releases are built at once.
//!
//! Callers are keyed by the identity the gateway proved (an agency by its certificate, a person
//! by the subject of a verified JWT), so the table of callers grows only with real identities;
//! it is still capped at [`MAX_CALLERS`] entries (idle ones are dropped first). A refusal says
//! which `[limits]` setting refused it; the caller audits it (at most one entry per caller and
//! limit a second, the next entry counting the refusals in between) so a flood cannot grow the
//! audit log without bound.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most callers tracked at once.
pub const MAX_CALLERS: usize = 10_000;

/// The configured limits (`[limits]` of `gateway.toml`).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Most records in one ingest batch (`max_batch_records`).
    pub max_batch_records: usize,
    /// Most rows one release may carry, all files together (`max_release_rows`).
    pub max_release_rows: u64,
    /// Ingest streams one agency may have open at once (`max_streams_per_agency`).
    pub max_streams_per_agency: usize,
    /// Ingest or withdrawal calls an agency may start per minute (`agency_calls_per_min`).
    pub agency_calls_per_min: u32,
    /// Records per second taken in from one agency; faster streams are slowed, not refused
    /// (`agency_records_per_sec`).
    pub agency_records_per_sec: u32,
    /// Calls one analyst or auditor may have in progress at once (`max_calls_per_user`).
    pub max_calls_per_user: usize,
    /// Calls one analyst or auditor may start per minute (`user_calls_per_min`).
    pub user_calls_per_min: u32,
    /// Releases built at once, gateway-wide; more wait their turn (`max_concurrent_releases`).
    pub max_concurrent_releases: usize,
    /// Time a call may take until its answer begins (`request_timeout_secs`): all of a unary
    /// call or of an ingest stream; for a release (Extract, Aggregate) or an audit query or
    /// export, the wait for a release slot, the work and its audit entry, up to the first byte
    /// sent. A transfer already under way is not cut. Beyond it the call ends with
    /// `DEADLINE_EXCEEDED` naming the setting, audited as a `limit` entry; a caller's own shorter
    /// `grpc-timeout` ends it the same way, unaudited (see [`crate::service::deadline`]).
    pub request_timeout: Duration,
    /// Time an ingest stream may stay silent between batches (`stream_idle_secs`).
    pub stream_idle_timeout: Duration,
    /// HTTP/2 streams one connection may have open at once (`max_connection_streams`).
    pub max_connection_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch_records: 10_000,
            max_release_rows: 5_000_000,
            max_streams_per_agency: 8,
            agency_calls_per_min: 600,
            agency_records_per_sec: 200_000,
            max_calls_per_user: 4,
            user_calls_per_min: 600,
            max_concurrent_releases: 2,
            request_timeout: Duration::from_secs(600),
            stream_idle_timeout: Duration::from_secs(120),
            max_connection_streams: 64,
        }
    }
}

/// Whom a refusal is counted against: the identities the limiter keys callers by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerKey {
    /// An agency, proven by its client certificate.
    Agency(String),
    /// A person, by the subject of a verified JWT.
    User(String),
}

impl CallerKey {
    fn key(&self) -> String {
        match self {
            CallerKey::Agency(a) => format!("agency:{a}"),
            CallerKey::User(sub) => format!("user:{sub}"),
        }
    }
}

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The `[limits]` setting that refused it, e.g. `limits.user_calls_per_min`.
    pub limit: &'static str,
    /// A sentence for the caller: what limit, and what to do.
    pub message: String,
    /// Whether to audit this refusal now; `Some(n)`: yes, and `n` earlier refusals of this
    /// caller and limit were not audited one by one.
    pub audit: Option<u64>,
}

impl Refusal {
    /// The reason an audit entry records.
    pub fn audit_reason(&self) -> String {
        match self.audit {
            Some(n) if n > 0 => format!(
                "{}: {} ({n} more refusal(s) of this caller by this limit since the last entry)",
                self.limit, self.message
            ),
            _ => format!("{}: {}", self.limit, self.message),
        }
    }
}

#[derive(Debug)]
struct Caller {
    /// Call tokens left (token bucket), refilled at the per-minute rate.
    calls: f64,
    /// When `calls` was last refilled.
    calls_at: Instant,
    /// Records reserved ahead of the rate (agencies): a stream waits until this drains.
    record_debt: f64,
    /// When `record_debt` was last drained.
    records_at: Instant,
    active: usize,
    /// Per limit: the last audited refusal and the refusals since.
    audited: HashMap<&'static str, (Instant, u64)>,
}

#[derive(Debug)]
struct Inner {
    limits: Limits,
    callers: Mutex<HashMap<String, Caller>>,
}

/// The limiter shared by the services.
#[derive(Debug, Clone)]
pub struct Limiter {
    inner: Arc<Inner>,
    /// Release slots (gateway-wide).
    pub releases: Arc<tokio::sync::Semaphore>,
}

/// A call in progress; dropping it frees its place.
#[derive(Debug)]
pub struct Permit {
    inner: Arc<Inner>,
    key: String,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut callers = crate::unpoisoned(self.inner.callers.lock());
        if let Some(c) = callers.get_mut(&self.key) {
            c.active = c.active.saturating_sub(1);
        }
    }
}

impl Limiter {
    /// A limiter enforcing `limits`.
    pub fn new(limits: Limits) -> Limiter {
        let slots = limits.max_concurrent_releases.max(1);
        Limiter {
            inner: Arc::new(Inner {
                limits,
                callers: Mutex::new(HashMap::new()),
            }),
            releases: Arc::new(tokio::sync::Semaphore::new(slots)),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// A refusal by `limit` of a call of `caller` already admitted (its deadline passed, say),
    /// audited like refusals at admission: at most one entry per caller and limit a second, the
    /// next counting those in between.
    pub fn refuse(&self, caller: &CallerKey, limit: &'static str, message: String) -> Refusal {
        self.refuse_at(caller, limit, message, Instant::now())
    }

    fn refuse_at(
        &self,
        caller: &CallerKey,
        limit: &'static str,
        message: String,
        now: Instant,
    ) -> Refusal {
        let burst = match caller {
            CallerKey::Agency(_) => bucket_size(self.inner.limits.agency_calls_per_min),
            CallerKey::User(_) => bucket_size(self.inner.limits.user_calls_per_min),
        };
        let key = caller.key();
        let mut callers = self.lock();
        make_room(&mut callers, &key);
        let c = caller_entry(&mut callers, key, now, burst);
        Refusal {
            limit,
            message,
            audit: audit_turn(c, limit, now),
        }
    }

    /// Admits an ingest or withdrawal call of `agency`.
    pub fn agency_call(&self, agency: &str, streaming: bool) -> Result<Permit, Refusal> {
        let l = &self.inner.limits;
        let max_active = if streaming {
            l.max_streams_per_agency
        } else {
            usize::MAX
        };
        self.admit(
            CallerKey::Agency(agency.to_owned()).key(),
            l.agency_calls_per_min,
            ("limits.agency_calls_per_min", "calls a minute"),
            max_active,
            (
                "limits.max_streams_per_agency",
                "ingest streams open at once",
            ),
            Instant::now(),
        )
    }

    /// Admits a call of the analyst or auditor with JWT subject `sub`.
    pub fn user_call(&self, sub: &str) -> Result<Permit, Refusal> {
        let l = &self.inner.limits;
        self.admit(
            CallerKey::User(sub.to_owned()).key(),
            l.user_calls_per_min,
            ("limits.user_calls_per_min", "calls a minute"),
            l.max_calls_per_user,
            ("limits.max_calls_per_user", "calls in progress at once"),
            Instant::now(),
        )
    }

    /// How long `agency` must wait before `records` more records are taken in, keeping it at
    /// `agency_records_per_sec` (one second's worth may arrive at once).
    pub fn pace_records(&self, agency: &str, records: usize) -> Duration {
        let rate = f64::from(self.inner.limits.agency_records_per_sec.max(1));
        let now = Instant::now();
        let mut callers = self.lock();
        let burst = bucket_size(self.inner.limits.agency_calls_per_min);
        let c = caller_entry(
            &mut callers,
            CallerKey::Agency(agency.to_owned()).key(),
            now,
            burst,
        );
        let elapsed = now.saturating_duration_since(c.records_at).as_secs_f64();
        c.record_debt = (c.record_debt - elapsed * rate).max(0.0);
        c.records_at = now;
        c.record_debt += records as f64;
        // The first second's worth is free (a burst); beyond it, wait for the debt to drain.
        let over = c.record_debt - rate;
        if over > 0.0 {
            Duration::from_secs_f64(over / rate)
        } else {
            Duration::ZERO
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Caller>> {
        crate::unpoisoned(self.inner.callers.lock())
    }

    fn admit(
        &self,
        key: String,
        per_min: u32,
        rate_limit: (&'static str, &'static str),
        max_active: usize,
        active_limit: (&'static str, &'static str),
        now: Instant,
    ) -> Result<Permit, Refusal> {
        let burst = bucket_size(per_min);
        let mut callers = self.lock();
        make_room(&mut callers, &key);
        let c = caller_entry(&mut callers, key.clone(), now, burst);
        let per_sec = f64::from(per_min) / 60.0;
        let elapsed = now.saturating_duration_since(c.calls_at).as_secs_f64();
        c.calls = (c.calls + elapsed * per_sec).min(burst);
        c.calls_at = now.max(c.calls_at);
        let refused = if c.active >= max_active {
            Some((
                active_limit.0,
                format!(
                    "{max_active} {} is the most allowed; wait for one to finish",
                    active_limit.1
                ),
            ))
        } else if c.calls < 1.0 {
            let wait = (1.0 - c.calls) / per_sec.max(1e-9);
            Some((
                rate_limit.0,
                format!(
                    "{per_min} {} is the most allowed; retry in {:.1} s",
                    rate_limit.1, wait
                ),
            ))
        } else {
            None
        };
        match refused {
            None => {
                c.calls -= 1.0;
                c.active += 1;
                Ok(Permit {
                    inner: self.inner.clone(),
                    key,
                })
            }
            Some((limit, message)) => Err(Refusal {
                limit,
                message,
                audit: audit_turn(c, limit, now),
            }),
        }
    }
}

/// Tokens a bucket holds: ten seconds' worth of the per-minute rate, at least one.
fn bucket_size(per_min: u32) -> f64 {
    (f64::from(per_min) / 6.0).max(1.0)
}

/// Whether a refusal of `c` by `limit` at `now` is audited: `Some(n)` (with `n` refusals since
/// the last entry) when none was audited in the last second, else `None` (counted).
fn audit_turn(c: &mut Caller, limit: &'static str, now: Instant) -> Option<u64> {
    let slot = c.audited.entry(limit).or_insert((now, 0));
    if slot.1 == 0 || now.duration_since(slot.0) >= Duration::from_secs(1) {
        let earlier = if slot.1 == 0 { 0 } else { slot.1 - 1 };
        *slot = (now, 1);
        Some(earlier)
    } else {
        slot.1 += 1;
        None
    }
}

/// Keeps the table within [`MAX_CALLERS`] before `key` is added: idle callers go first.
fn make_room(callers: &mut HashMap<String, Caller>, key: &str) {
    if callers.len() >= MAX_CALLERS && !callers.contains_key(key) {
        callers.retain(|_, c| c.active > 0);
    }
}

fn caller_entry(
    callers: &mut HashMap<String, Caller>,
    key: String,
    now: Instant,
    calls: f64,
) -> &mut Caller {
    callers.entry(key).or_insert_with(|| Caller {
        calls,
        calls_at: now,
        record_debt: 0.0,
        records_at: now,
        active: 0,
        audited: HashMap::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_streams_per_agency: 2,
            agency_calls_per_min: 60,
            max_calls_per_user: 1,
            user_calls_per_min: 12,
            agency_records_per_sec: 1000,
            ..Limits::default()
        }
    }

    #[test]
    fn concurrent_calls_are_capped_and_freed_on_drop() {
        let l = Limiter::new(limits());
        let a = l.user_call("ann").expect("first");
        let r = l.user_call("ann").expect_err("second at once");
        assert_eq!(r.limit, "limits.max_calls_per_user");
        assert!(l.user_call("bob").is_ok(), "others are not affected");
        drop(a);
        assert!(l.user_call("ann").is_ok(), "freed on drop");
    }

    #[test]
    fn the_rate_refuses_beyond_the_bucket_and_refills_with_time() {
        let l = Limiter::new(limits());
        let t0 = Instant::now();
        let key = || "user:ann".to_string();
        let admit = |t| {
            l.admit(
                key(),
                12,
                ("limits.user_calls_per_min", "calls a minute"),
                usize::MAX,
                ("x", "y"),
                t,
            )
        };
        // 12 a minute: a bucket of 2, one more every 5 s.
        assert!(admit(t0).is_ok());
        assert!(admit(t0).is_ok());
        let r = admit(t0).expect_err("third at once");
        assert_eq!(r.limit, "limits.user_calls_per_min");
        assert_eq!(r.audit, Some(0), "the first refusal is audited");
        let r = admit(t0 + Duration::from_millis(10)).expect_err("fourth");
        assert_eq!(r.audit, None, "within a second: counted, not audited");
        let r = admit(t0 + Duration::from_millis(1500)).expect_err("fifth");
        assert_eq!(r.audit, Some(1), "the next entry counts the one in between");
        assert!(r.audit_reason().contains("1 more refusal"));
        assert!(admit(t0 + Duration::from_secs(6)).is_ok(), "refilled");
    }

    #[test]
    fn refusals_of_admitted_calls_are_audited_once_a_second_per_caller_and_limit() {
        let l = Limiter::new(limits());
        let t0 = Instant::now();
        let ann = CallerKey::User("ann".into());
        let slow = |who: &CallerKey, limit, t| l.refuse_at(who, limit, "too slow".into(), t);
        let r = slow(&ann, "limits.request_timeout_secs", t0);
        assert_eq!(r.audit, Some(0), "the first is audited");
        assert_eq!(r.audit_reason(), "limits.request_timeout_secs: too slow");
        let r = slow(
            &ann,
            "limits.request_timeout_secs",
            t0 + Duration::from_millis(10),
        );
        assert_eq!(r.audit, None, "within a second: counted, not audited");
        let agency = CallerKey::Agency("ann".into());
        let r = slow(
            &agency,
            "limits.request_timeout_secs",
            t0 + Duration::from_millis(20),
        );
        assert_eq!(
            r.audit,
            Some(0),
            "an agency is another caller, whatever its name"
        );
        let r = slow(
            &ann,
            "limits.stream_idle_secs",
            t0 + Duration::from_millis(30),
        );
        assert_eq!(r.audit, Some(0), "another limit");
        let r = slow(
            &ann,
            "limits.request_timeout_secs",
            t0 + Duration::from_millis(1100),
        );
        assert_eq!(r.audit, Some(1), "the next entry counts the one in between");
    }

    #[test]
    fn streams_per_agency_are_capped_but_unary_calls_are_not() {
        let l = Limiter::new(limits());
        let _a = l.agency_call("lfb", true).expect("1");
        let _b = l.agency_call("lfb", true).expect("2");
        let r = l.agency_call("lfb", true).expect_err("3");
        assert_eq!(r.limit, "limits.max_streams_per_agency");
        assert!(l.agency_call("lfb", false).is_ok());
    }

    #[test]
    fn records_are_paced_after_a_second_worth() {
        let l = Limiter::new(limits());
        assert_eq!(l.pace_records("lfb", 1000), Duration::ZERO);
        let wait = l.pace_records("lfb", 500);
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert_eq!(l.pace_records("met-police", 500), Duration::ZERO);
    }

    #[test]
    fn the_caller_table_stays_bounded() {
        let l = Limiter::new(limits());
        for i in 0..(MAX_CALLERS + 100) {
            let _ = l.user_call(&format!("u{i}"));
        }
        assert!(l.lock().len() <= MAX_CALLERS + 1);
    }
}
