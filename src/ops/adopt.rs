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

/// What an import of adoptions came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Imported {
    pub rows: usize,
    pub added: usize,
}

/// Imports adoptions from CSV text with a header row naming `ars`, `service` and optionally `name`
/// (`file` names it in messages): every row is checked first — a file with one bad row changes
/// nothing, [`OpsError::Usage`] lists every bad row with its line — then each new adoption is added
/// and logged as [`adopt_add`] logs it, with `reason` (default: the import of `file`).
pub async fn import_adoptions(
    ctx: &Ctx<'_>,
    actor: &Actor,
    csv_text: &[u8],
    file: &str,
    force: bool,
    reason: Option<&str>,
) -> Result<Imported, OpsError> {
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(csv_text);
    let headers = reader.headers().map_err(|e| OpsError::Usage(format!("{file}: {e}")))?.clone();
    let column = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let (Some(ars_at), Some(service_at)) = (column("ars"), column("service")) else {
        return Err(OpsError::Usage(format!(
            "{file}: the header row must name the columns `ars` and `service` (and optionally `name`)"
        )));
    };
    let name_at = column("name");
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for (index, record) in reader.records().enumerate() {
        let line = index + 2;
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                errors.push(format!("{file}:{line}: {e}"));
                continue;
            }
        };
        let field = |at: usize| record.get(at).unwrap_or("").to_owned();
        let (ars, service) = (field(ars_at), field(service_at));
        let name = name_at.map(field).filter(|n| !n.is_empty());
        match check_adoption(&ars, &service, force) {
            Ok(()) => rows.push((ars, service, name)),
            Err(e) => errors.push(format!("{file}:{line}: {e}")),
        }
    }
    if !errors.is_empty() {
        errors.push("nothing imported: fix the rows above and import again".into());
        return Err(OpsError::Usage(errors.join("\n")));
    }
    let reason = reason.map(str::to_owned).unwrap_or_else(|| format!("import of {file}"));
    let mut added = 0;
    for (ars, service, name) in &rows {
        if adopt_add(ctx, actor, ars, service, name.as_deref(), force, Some(&reason)).await? {
            added += 1;
        }
    }
    Ok(Imported { rows: rows.len(), added })
}
