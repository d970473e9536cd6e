//! Tenants, domains, users, a tenant's legacy TLS settings, API keys and the audit log.

use super::{no_tenant, Caller, Ops, OpsError, OpsResult, Scope};
use crate::directory::{
    generate_password, normalize_address, ApiKey, AuditFilter, AuditRecord, Domain, LegacyChanges, LegacySettings, NewKey,
    Tenant, User, UserChanges,
};

/// A user to add: without a password, one is generated (and returned once).
#[derive(Debug, Clone)]
pub struct NewUser {
    pub address: String,
    pub password: Option<String>,
    pub smtp_auth: bool,
}

/// Changes to a tenant's legacy TLS settings; `None` leaves a value as it is.
#[derive(Debug, Clone, Default)]
pub struct LegacyUpdate {
    pub allowed: Option<bool>,
    /// `Some(None)` removes the end date.
    pub until: Option<Option<chrono::NaiveDate>>,
    /// Addresses (empty: all users).
    pub users: Option<Vec<String>>,
    /// Networks as written (`10.1.0.0/16`, or one address; empty: any network).
    pub networks: Option<Vec<String>>,
    /// The operator's veto.
    pub forbidden: Option<bool>,
}

/// A key to make: `operator`, or for `tenant`.
#[derive(Debug, Clone, Default)]
pub struct KeyRequest {
    pub operator: bool,
    pub tenant: Option<String>,
    pub description: String,
    pub expires: Option<chrono::NaiveDate>,
    pub allow_ips: Vec<String>,
}

/// A network as an operator writes it: a CIDR, or one address.
fn parse_network(s: &str, field: String) -> OpsResult<ipnet::IpNet> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| OpsError::invalid(field, format!("{s:?} is not a network like 10.1.0.0/16 or an address")))
}

impl Ops {
    // ---- tenants ---------------------------------------------------------------------

    pub async fn add_tenant(&self, c: &Caller, name: &str) -> OpsResult<Tenant> {
        c.operator_only("creating a tenant")?;
        self.dir_as(c).add_tenant(name).await.map_err(|e| OpsError::from_directory(e, "name"))?;
        self.directory_changed().await;
        Ok(self.dir.tenant(name.trim()).await?)
    }

    pub async fn list_tenants(&self, c: &Caller) -> OpsResult<Vec<Tenant>> {
        match &c.scope {
            Scope::Operator => Ok(self.dir.list_tenants().await?),
            Scope::Tenant(t) => Ok(vec![self.dir.tenant(t).await?]),
        }
    }

    pub async fn tenant(&self, c: &Caller, name: &str) -> OpsResult<Tenant> {
        if !c.sees(name) {
            return Err(no_tenant(name));
        }
        self.dir.tenant(name).await.map_err(|_| no_tenant(name))
    }

    pub async fn legacy_settings(&self, c: &Caller, tenant: &str) -> OpsResult<LegacySettings> {
        Ok(self.tenant(c, tenant).await?.legacy)
    }

    /// Changes a tenant's legacy TLS settings: all given values or none.
    pub async fn set_legacy(&self, c: &Caller, tenant: &str, u: &LegacyUpdate) -> OpsResult<LegacySettings> {
        let current = self.tenant(c, tenant).await?;
        if u.forbidden.is_some() {
            c.operator_only("the legacy TLS veto (forbidden)")?;
        }
        if let Some(Some(d)) = u.until {
            if d < self.today() {
                return Err(OpsError::invalid("until", format!("{d} is in the past: give today or a later day, or none")));
            }
        }
        let users = match &u.users {
            None => None,
            Some(list) => Some(self.tenant_users(&current, list)?),
        };
        let networks = match &u.networks {
            None => None,
            Some(list) => Some(
                list.iter()
                    .enumerate()
                    .map(|(i, n)| parse_network(n, format!("networks[{i}]")))
                    .collect::<OpsResult<Vec<_>>>()?,
            ),
        };
        let changes = LegacyChanges { allowed: u.allowed, until: u.until, users, networks, forbidden: u.forbidden };
        if changes.is_empty() {
            return Err(OpsError::invalid("", "nothing to change: give allowed, until, users, networks or forbidden"));
        }
        let s = self.dir_as(c).set_legacy(tenant, &changes).await.map_err(|e| OpsError::from_directory(e, "users"))?;
        self.directory_changed().await;
        Ok(s)
    }

    /// Opt-in users must be addresses in the tenant's own domains.
    fn tenant_users(&self, tenant: &Tenant, list: &[String]) -> OpsResult<Vec<String>> {
        list.iter()
            .enumerate()
            .map(|(i, a)| {
                let field = format!("users[{i}]");
                let a = normalize_address(a).map_err(|e| OpsError::invalid(&field, e.to_string()))?;
                let domain = a.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
                if !tenant.domains.iter().any(|d| d == domain) {
                    return Err(OpsError::invalid(field, format!("{a} is not in a domain of tenant {}", tenant.name)));
                }
                Ok(a)
            })
            .collect()
    }

    /// The tenant a listing is limited to ([`Caller::tenant_filter`]), known to exist.
    async fn listing_tenant(&self, c: &Caller, tenant: Option<&str>) -> OpsResult<Option<String>> {
        let t = c.tenant_filter(tenant)?;
        if let Some(t) = &t {
            self.tenant(c, t).await?;
        }
        Ok(t)
    }

    // ---- domains ---------------------------------------------------------------------

    pub async fn add_domain(&self, c: &Caller, domain: &str, tenant: &str) -> OpsResult<Domain> {
        c.operator_only("adding an accepted domain")?;
        let name = crate::directory::normalize_domain(domain).map_err(|e| OpsError::from_directory(e, "domain"))?;
        self.dir_as(c).add_domain(&name, tenant).await.map_err(|e| OpsError::from_directory(e, "domain"))?;
        self.directory_changed().await;
        Ok(Domain { name, tenant: tenant.to_string() })
    }

    pub async fn list_domains(&self, c: &Caller, tenant: Option<&str>) -> OpsResult<Vec<Domain>> {
        let t = self.listing_tenant(c, tenant).await?;
        Ok(self.dir.list_domains(t.as_deref()).await?)
    }

    // ---- users -----------------------------------------------------------------------

    /// The tenant an address belongs to, if the caller may act on it.
    async fn address_tenant(&self, c: &Caller, address: &str) -> OpsResult<(String, String)> {
        let address = normalize_address(address).map_err(|e| OpsError::invalid("address", e.to_string()))?;
        let domain = address.rsplit_once('@').map(|(_, d)| d.to_string()).unwrap_or_default();
        match self.dir.domain_tenant(&domain).await? {
            Some(t) if c.sees(&t) => Ok((address, t)),
            _ => Err(OpsError::NotFound(format!("{domain} is not an accepted domain{}", match c.scope {
                Scope::Operator => format!("; add it first with `mailgate domain add {domain} --tenant NAME`"),
                Scope::Tenant(_) => " of your tenant".to_string(),
            }))),
        }
    }

    /// Adds a user; returns it and the generated password, if one was made.
    pub async fn add_user(&self, c: &Caller, u: &NewUser) -> OpsResult<(User, Option<String>)> {
        let (address, _) = self.address_tenant(c, &u.address).await?;
        let (password, generated) = match &u.password {
            Some(p) => (p.clone(), None),
            None => {
                let p = generate_password();
                (p.clone(), Some(p))
            }
        };
        crate::directory::check_password(&password).map_err(|e| OpsError::invalid("password", e.to_string()))?;
        let user = self.dir_as(c).add_user(&address, &password, u.smtp_auth).await.map_err(|e| OpsError::from_directory(e, "address"))?;
        self.directory_changed().await;
        Ok((user, generated))
    }

    pub async fn list_users(&self, c: &Caller, tenant: Option<&str>) -> OpsResult<Vec<User>> {
        let t = self.listing_tenant(c, tenant).await?;
        Ok(self.dir.list_users(t.as_deref()).await?)
    }

    pub async fn user(&self, c: &Caller, address: &str) -> OpsResult<User> {
        let (address, _) = self.address_tenant(c, address).await?;
        self.dir.user(&address).await?.ok_or_else(|| OpsError::NotFound(format!("no user {address}")))
    }

    pub async fn set_user(&self, c: &Caller, address: &str, changes: &UserChanges) -> OpsResult<User> {
        if changes.enabled.is_none() && changes.smtp_auth.is_none() {
            return Err(OpsError::invalid("", "nothing to change: give smtp_auth and/or enabled"));
        }
        let (address, _) = self.address_tenant(c, address).await?;
        let u = self.dir_as(c).set_user(&address, changes).await.map_err(|e| OpsError::from_directory(e, "address"))?;
        self.directory_changed().await;
        Ok(u)
    }

    /// Sets a new password; returns the generated one if none was given.
    pub async fn set_password(&self, c: &Caller, address: &str, password: Option<&str>) -> OpsResult<Option<String>> {
        let (address, _) = self.address_tenant(c, address).await?;
        let generated = password.is_none().then(generate_password);
        let pw = password.map(String::from).or_else(|| generated.clone()).unwrap_or_default();
        crate::directory::check_password(&pw).map_err(|e| OpsError::invalid("password", e.to_string()))?;
        self.dir_as(c).set_password(&address, &pw).await.map_err(|e| OpsError::from_directory(e, "password"))?;
        self.directory_changed().await;
        Ok(generated)
    }

    // ---- API keys --------------------------------------------------------------------

    /// Makes a key; returns it and the key string (shown once). A tenant admin makes
    /// keys for their own tenant only; operator keys are made by the operator.
    pub async fn add_key(&self, c: &Caller, r: &KeyRequest) -> OpsResult<(ApiKey, String)> {
        let tenant = match (r.operator, &r.tenant) {
            (true, None) => {
                c.operator_only("an operator key")?;
                None
            }
            (false, Some(t)) => {
                self.tenant(c, t).await?;
                Some(t.clone())
            }
            _ => return Err(OpsError::invalid("tenant", "give either operator or a tenant (one of the two)")),
        };
        if let Some(d) = r.expires {
            if d < self.today() {
                return Err(OpsError::invalid("expires", format!("{d} is in the past: give today or a later day")));
            }
        }
        let allow_ips = r
            .allow_ips
            .iter()
            .enumerate()
            .map(|(i, n)| parse_network(n, format!("allow_ips[{i}]")))
            .collect::<OpsResult<Vec<_>>>()?;
        let new = NewKey { tenant, description: r.description.clone(), expires: r.expires, allow_ips };
        self.dir_as(c).add_api_key(&new).await.map_err(|e| OpsError::from_directory(e, "description"))
    }

    pub async fn list_keys(&self, c: &Caller, tenant: Option<&str>) -> OpsResult<Vec<ApiKey>> {
        let t = self.listing_tenant(c, tenant).await?;
        Ok(self.dir.list_api_keys(t.as_deref()).await?)
    }

    pub async fn revoke_key(&self, c: &Caller, id: &str) -> OpsResult<ApiKey> {
        let not_found = || OpsError::NotFound(format!("no API key {id:?}"));
        let key = self.dir.api_key(id).await?.ok_or_else(not_found)?;
        let visible = match &key.tenant {
            Some(t) => c.sees(t),
            None => c.is_operator(),
        };
        if !visible {
            return Err(not_found());
        }
        Ok(self.dir_as(c).revoke_api_key(id).await?)
    }

    // ---- audit -----------------------------------------------------------------------

    /// Audit records, newest first: `since` like `7d` (default 30 days), at most `limit`.
    pub async fn audit(&self, c: &Caller, tenant: Option<&str>, since: Option<&str>, limit: Option<u32>) -> OpsResult<Vec<AuditRecord>> {
        let t = c.tenant_filter(tenant)?;
        if let Some(t) = &t {
            if !self.dir.tenant_exists(t).await? && c.is_operator() {
                return Err(no_tenant(t));
            }
        }
        let today = self.today();
        let period = crate::usage::report::Period::parse(Some(since.unwrap_or("30d")), None, None, today)
            .map_err(|m| OpsError::invalid("since", m))?;
        let since = period.from.and_hms_opt(0, 0, 0).map(|d| d.and_utc().timestamp()).unwrap_or(0);
        let limit = limit.unwrap_or(1000);
        if !(1..=10_000).contains(&limit) {
            return Err(OpsError::invalid("limit", "must be between 1 and 10000"));
        }
        Ok(self.dir.audit_list(&AuditFilter { tenant: t, since, limit }).await?)
    }
}
