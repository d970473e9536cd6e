//! Synthetic usage events for benchmarks (`mailgate usage load-synthetic`): a
//! deterministic mix of tenants, senders, devices, TLS versions and outcomes, written as
//! raw events and daily rollups like the recorder writes them.

use super::store::{rollup, SqliteUsageStore};
use super::{Outcome, UsageEvent};
use chrono::{DateTime, Utc};
use rand::{Rng, SeedableRng};

/// What to generate.
#[derive(Debug, Clone)]
pub struct Spec {
    pub events: u64,
    pub days: u32,
    pub tenants: u32,
    /// Senders per tenant.
    pub senders: u32,
    pub seed: u64,
}

/// One synthetic event at a random time in the `days` before `now`.
fn event(rng: &mut rand::rngs::StdRng, spec: &Spec, now: i64) -> UsageEvent {
    let tenant = rng.gen_range(0..spec.tenants.max(1));
    let sender = rng.gen_range(0..spec.senders.max(1));
    // Each sender is one device: its version and fingerprint follow from its number.
    let (version, fp) = match sender % 50 {
        0..=3 => ("TLSv1.0", "t10i090500_c491f621fb4c_195413a0cc0f"),
        4 => ("TLSv1.1", "t11i090500_c491f621fb4c_195413a0cc0f"),
        5..=14 => ("TLSv1.2", "t12d1909h2_d83cc789557e_7af1ed941c26"),
        _ => ("TLSv1.3", "t13d1516h2_8daaf6152771_e5627efa2ab1"),
    };
    let legacy = version == "TLSv1.0" || version == "TLSv1.1";
    let mut e = UsageEvent::new("synthetic", if legacy { "legacy-starttls" } else { "standard-starttls" }, [10, 0, (tenant % 250) as u8, (sender % 250) as u8].into());
    e.time = now - rng.gen_range(0..i64::from(spec.days.max(1)) * 86_400);
    e.tenant = Some(format!("tenant{tenant}"));
    e.user = Some(format!("sender{sender}@tenant{tenant}.test"));
    e.offered_max = Some(version.into());
    e.version = Some(version.into());
    e.cipher = Some(if legacy { "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA" } else { "TLS13_AES_256_GCM_SHA384" }.into());
    e.fingerprint = Some(fp.into());
    e.ehlo = Some(format!("device{sender}"));
    e.outcome = match rng.gen_range(0..100) {
        0..=94 => Outcome::Delivered,
        95..=97 => Outcome::AuthFailed,
        _ => Outcome::Other,
    };
    e.messages = if e.outcome == Outcome::Delivered { rng.gen_range(1..4) } else { 0 };
    e.bytes = u64::from(e.messages) * rng.gen_range(2_000..200_000);
    e
}

/// Writes `spec.events` events in chunks (raw rows and rollups).
pub async fn load(store: &SqliteUsageStore, spec: &Spec, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(spec.seed);
    let mut left = spec.events;
    while left > 0 {
        let n = left.min(100_000);
        let chunk: Vec<UsageEvent> = (0..n).map(|_| event(&mut rng, spec, now.timestamp())).collect();
        store.insert_raw(&chunk).await?;
        store.insert_rollups(&rollup(&chunk)).await?;
        left -= n;
    }
    Ok(())
}
