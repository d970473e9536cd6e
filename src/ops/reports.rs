//! The TLS usage reports (tls, legacy, what-if), scoped: a tenant admin's reports hold
//! their tenant's rows only; unattributed rows (sessions refused before AUTH, known by
//! address, EHLO and fingerprint) are the operator's.

use super::{Caller, Ops, OpsError, OpsResult};
use crate::usage::report::{legacy_report, tls_report, what_if, LegacyRow, Period, Scenario, SuiteKind, TlsRow, WhatIfRow};
use crate::usage::store::{DailyRow, RollupFilter, UsageStore};

/// The period and tenant of a report, as the CLI's flags and the API's query give them.
#[derive(Debug, Clone, Default)]
pub struct ReportQuery {
    pub tenant: Option<String>,
    /// `7d`, `90d`, `12w`, ending today.
    pub since: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// The scenario of a what-if, as given.
#[derive(Debug, Clone, Default)]
pub struct WhatIfQuery {
    /// `YYYY-MM-DD`.
    pub on: Option<String>,
    pub disable_legacy: bool,
    /// `static-rsa` or `cbc`.
    pub drop: Option<String>,
    /// With `drop`: only this endpoint.
    pub endpoint: Option<String>,
}

/// Which of since/from/to a period error is about.
fn period_field(message: &str) -> &'static str {
    ["since", "from", "to"].into_iter().find(|f| message.starts_with(&format!("--{f}"))).unwrap_or("since")
}

impl Ops {
    async fn report_rows(&self, c: &Caller, q: &ReportQuery) -> OpsResult<(Vec<DailyRow>, Period)> {
        let tenant = c.tenant_filter(q.tenant.as_deref())?;
        let today = self.today();
        let period = Period::parse(q.since.as_deref(), q.from.as_deref(), q.to.as_deref(), today)
            .map_err(|m| OpsError::invalid(period_field(&m), m))?;
        let store = self.usage_store().await?;
        let rows = store
            .period_totals(&RollupFilter { tenant: tenant.clone(), from: period.from, to: period.to })
            .await
            .map_err(|e| OpsError::Failed(format!("cannot read the usage store: {e}")))?;
        // A tenant with history but since removed still has a report; an unknown name is an error.
        if let (Some(t), true) = (&tenant, rows.is_empty()) {
            if !self.dir.tenant_exists(t).await? {
                return Err(super::no_tenant(t));
            }
        }
        Ok((rows, period))
    }

    pub async fn tls_report(&self, c: &Caller, q: &ReportQuery) -> OpsResult<Vec<TlsRow>> {
        Ok(tls_report(&self.report_rows(c, q).await?.0))
    }

    pub async fn legacy_report(&self, c: &Caller, q: &ReportQuery) -> OpsResult<Vec<LegacyRow>> {
        Ok(legacy_report(&self.report_rows(c, q).await?.0))
    }

    fn scenario(&self, w: &WhatIfQuery) -> OpsResult<Scenario> {
        if let Some(e) = w.endpoint.as_deref() {
            if w.drop.is_none() {
                return Err(OpsError::invalid("endpoint", "endpoint goes with drop"));
            }
            if !self.config.endpoints.iter().any(|x| x.name == e) {
                let names: Vec<&str> = self.config.endpoints.iter().map(|x| x.name.as_str()).collect();
                return Err(OpsError::invalid(
                    "endpoint",
                    format!("no such endpoint {e:?} in {} (endpoints: {})", self.config.path.display(), names.join(", ")),
                ));
            }
        }
        let given = [w.on.is_some(), w.disable_legacy, w.drop.is_some()].iter().filter(|b| **b).count();
        if given != 1 {
            return Err(OpsError::invalid("on", "give exactly one of on (a date), disable_legacy or drop (static-rsa or cbc)"));
        }
        if w.disable_legacy {
            return Ok(Scenario::DisableLegacy);
        }
        if let Some(k) = &w.drop {
            let kind = SuiteKind::parse(k).ok_or_else(|| OpsError::invalid("drop", format!("{k:?}: expected static-rsa or cbc")))?;
            return Ok(Scenario::DropSuites(kind, w.endpoint.clone()));
        }
        let d = w.on.as_deref().unwrap_or_default();
        chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .map(Scenario::On)
            .map_err(|_| OpsError::invalid("on", format!("{d:?}: expected a date like 2027-03-01")))
    }

    /// Who would fail under the scenario, with the reply they would get.
    pub async fn what_if(&self, c: &Caller, q: &ReportQuery, w: &WhatIfQuery) -> OpsResult<Vec<WhatIfRow>> {
        let scenario = self.scenario(w)?;
        let (rows, period) = self.report_rows(c, q).await?;
        let mut tenants = std::collections::HashMap::new();
        for t in rows.iter().map(|r| r.tenant.clone()).filter(|t| !t.is_empty()) {
            if let std::collections::hash_map::Entry::Vacant(e) = tenants.entry(t) {
                let settings = self.dir.legacy_settings(e.key()).await.unwrap_or_default();
                e.insert(settings);
            }
        }
        Ok(what_if(&rows, &self.config.endpoints, &tenants, scenario, period, self.today()))
    }
}
