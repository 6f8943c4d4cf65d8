//! Who is asking, and so what they may see. Every read and write in `admin/`
//! takes an [`Access`] (filtered in SQL by [`Access::tenant`]) or, for what
//! only operators may do, an [`AdminAccess`], so that a new route cannot
//! forget the scope: without one it does not compile.

use serde::Serialize;

use super::{Error, Result};

/// The scope of a request: an operator, or one tenant's portal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "scope", rename_all = "lowercase")]
pub enum Access {
    /// `admin.token`, a loopback relay without one, or the CLI (which holds
    /// the database's own credentials): everything.
    Admin,
    /// A tenant token: only endpoints whose `tenant` is this one (never the
    /// global ones), their deliveries and attempts, and the event type catalog.
    Tenant {
        tenant: String,
        /// When the token stops working (RFC 3339).
        expires_at: String,
    },
}

/// Proof that the caller is an operator: only [`Access::require_admin`]
/// makes one, and the operator-only functions ask for it.
#[derive(Debug, Clone, Copy)]
pub struct AdminAccess(());

impl Access {
    /// The tenant to filter by, for SQL's `($n::text is null or e.tenant = $n)`:
    /// `None` sees everything. A tenant never matches a NULL (global) tenant.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Access::Admin => None,
            Access::Tenant { tenant, .. } => Some(tenant),
        }
    }

    /// [`AdminAccess`], or the refusal a tenant token gets.
    pub fn require_admin(&self) -> Result<AdminAccess> {
        match self {
            Access::Admin => Ok(AdminAccess(())),
            Access::Tenant { tenant, .. } => Err(Error::Forbidden(format!(
                "this token is tenant-scoped (tenant {tenant:?}): it manages that tenant's endpoints and \
                 sees their deliveries; this needs the admin token"
            ))),
        }
    }

    /// Refuses a tenant other than the token's own, for a field a request may set.
    pub fn check_tenant(&self, requested: Option<&str>) -> Result<()> {
        match (self.tenant(), requested) {
            (None, _) => Ok(()),
            (Some(own), Some(requested)) if own == requested => Ok(()),
            (Some(own), requested) => Err(Error::Forbidden(format!(
                "this token is tenant-scoped (tenant {own:?}): it cannot set tenant {}",
                requested.map_or_else(|| "null (every tenant)".to_owned(), |t| format!("{t:?}"))
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str) -> Access {
        Access::Tenant { tenant: name.into(), expires_at: "2030-01-01T00:00:00Z".into() }
    }

    #[test]
    fn a_tenant_is_refused_what_only_admins_may_do_and_other_tenants() {
        assert!(Access::Admin.require_admin().is_ok());
        let refused = tenant("acme").require_admin().unwrap_err().to_string();
        assert!(refused.contains("tenant-scoped") && refused.contains("acme"), "{refused}");

        assert!(Access::Admin.check_tenant(None).is_ok());
        assert!(tenant("acme").check_tenant(Some("acme")).is_ok());
        assert!(matches!(tenant("acme").check_tenant(Some("globex")), Err(Error::Forbidden(_))));
        assert!(matches!(tenant("acme").check_tenant(None), Err(Error::Forbidden(_))));
        assert_eq!(tenant("acme").tenant(), Some("acme"));
        assert_eq!(Access::Admin.tenant(), None);
    }
}
