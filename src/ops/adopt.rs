//! The actions on adoptions (Nachnutzung): a municipality adopts a service, or no longer does.
//! Adoptions are read when a run starts, so these take no lease: the next run of the service's
//! source delivers the change.

use super::{Actor, Ctx, OpsError, event, said};
use crate::store::adoptions::{check_ars, check_leika};
use crate::store::operator::OperatorEvent;

/// Checks an adoption's keys: the ARS (12 digits; outside NRW only with `force`) and the LeiKa key.
pub fn check_adoption(ars: &str, service: &str, force: bool) -> Result<(), OpsError> {
    check_ars(ars, force).and_then(|()| check_leika(service)).map_err(|e| OpsError::Usage(e.to_string()))
}

/// Records that municipality `ars` adopts `service`, logged as `adoption of service … by … added by
/// …`. False (nothing logged; a given name replaces the stored one) if it already did.
pub async fn adopt_add(
    ctx: &Ctx<'_>,
    actor: &Actor,
    ars: &str,
    service: &str,
    name: Option<&str>,
    force: bool,
    reason: Option<&str>,
) -> Result<bool, OpsError> {
    check_adoption(ars, service, force)?;
    let name = name.map(str::trim).filter(|n| !n.is_empty());
    let who = name.map(|n| format!(" ({n})")).unwrap_or_default();
    let message = said(&format!("adoption of service {service} by {ars}{who} added"), actor, reason);
    let event = OperatorEvent { at: ctx.now(), ..event(actor, reason, None, None, message) };
    Ok(ctx.store.add_adoption_logged(ars, service, name, &event).await?)
}

/// Removes an adoption, logged as `adoption of service … by … removed by …`; refused (nothing
/// logged) if there is none.
pub async fn adopt_remove(
    ctx: &Ctx<'_>,
    actor: &Actor,
    ars: &str,
    service: &str,
    reason: Option<&str>,
) -> Result<(), OpsError> {
    let message = said(&format!("adoption of service {service} by {ars} removed"), actor, reason);
    let event = OperatorEvent { at: ctx.now(), ..event(actor, reason, None, None, message) };
    if ctx.store.remove_adoption_logged(ars, service, &event).await? {
        Ok(())
    } else {
        Err(OpsError::NotFound(format!("{ars} does not adopt {service}")))
    }
}
