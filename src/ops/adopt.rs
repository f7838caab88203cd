//! The actions on adoptions (Nachnutzung): a municipality adopts a service, or no longer does.
//! Adoptions are read when a run starts, so these take no lease: the next run of the service's
//! source delivers the change.

use std::collections::BTreeSet;

use super::{Actor, Ctx, OpsError, event, said};
use crate::store::adoptions::{check_ars, check_leika};
use crate::store::operator::OperatorEvent;

/// Checks an adoption's keys: the ARS (12 digits; outside NRW only with `force`) and the LeiKa key.
pub fn check_adoption(ars: &str, service: &str, force: bool) -> Result<(), OpsError> {
    check_ars(ars, force).and_then(|()| check_leika(service)).map_err(|e| OpsError::Usage(e.to_string()))
}

/// Records that municipality `ars` adopts `service`, logged as `adoption of service … by … added by
/// …`. False (nothing logged; a given name replaces the stored one) if it already did. Unless
/// `force`, the service must be one a configured source delivers ([`known_services`]).
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
    if !force {
        check_known(service, &known_services(ctx).await?).map_err(OpsError::Usage)?;
    }
    add_checked(ctx, actor, ars, service, name, reason).await
}

/// [`adopt_add`] for keys already checked.
async fn add_checked(
    ctx: &Ctx<'_>,
    actor: &Actor,
    ars: &str,
    service: &str,
    name: Option<&str>,
    reason: Option<&str>,
) -> Result<bool, OpsError> {
    let name = name.map(str::trim).filter(|n| !n.is_empty());
    let who = name.map(|n| format!(" ({n})")).unwrap_or_default();
    let message = said(&format!("adoption of service {service} by {ars}{who} added"), actor, reason);
    let event = OperatorEvent { at: ctx.now(), ..event(actor, reason, None, None, message) };
    Ok(ctx.store.add_adoption_logged(ars, service, name, &event).await?)
}

/// The LeiKa keys the configured sources delivered, as runs recorded them in the ledger (services
/// not withdrawn, of sources still configured where the caller knows them).
pub async fn known_services(ctx: &Ctx<'_>) -> Result<BTreeSet<String>, OpsError> {
    let keys = ctx.store.service_keys().await?;
    let configured = |source: &str| ctx.sources.as_ref().is_none_or(|known| known.iter().any(|k| k == source));
    Ok(keys.into_iter().filter(|(_, source)| configured(source)).map(|(key, _)| key).collect())
}

/// Refuses a LeiKa key that is not among the `known` ones, naming the closest known key; before any
/// run has recorded a service, says to run one.
fn check_known(service: &str, known: &BTreeSet<String>) -> Result<(), String> {
    if known.contains(service) {
        return Ok(());
    }
    if known.is_empty() {
        return Err(format!(
            "LeiKa key `{service}` cannot be checked: no run has recorded a service of a source with `leika_key` yet; \
             run a migration first (`portal-bridge migrate`), or use --force to adopt it anyway"
        ));
    }
    let candidates: Vec<&str> = known.iter().map(String::as_str).collect();
    let hint = match crate::config::closest_of(service, &candidates) {
        Some(closest) => format!(" (did you mean `{closest}`?)"),
        None => format!(" (none of the {} known keys is close; `portal-bridge items` lists the services)", known.len()),
    };
    Err(format!("LeiKa key `{service}` is delivered by no configured source{hint}; use --force to adopt it anyway"))
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
/// (`file` names it in messages): every row is checked first as [`adopt_add`] checks it — a file
/// with one bad row changes nothing, [`OpsError::Usage`] lists every bad row with its line — then
/// each new adoption is added and logged as [`adopt_add`] logs it, with `reason` (default: the
/// import of `file`).
pub async fn import_adoptions(
    ctx: &Ctx<'_>,
    actor: &Actor,
    csv_text: &[u8],
    file: &str,
    force: bool,
    reason: Option<&str>,
) -> Result<Imported, OpsError> {
    let text = csv_decode(csv_text);
    let delimiter = csv_delimiter(&text);
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).delimiter(delimiter).from_reader(text.as_bytes());
    let headers = reader.headers().map_err(|e| OpsError::Usage(format!("{file}: {e}")))?.clone();
    let column = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let (Some(ars_at), Some(service_at)) = (column("ars"), column("service")) else {
        let found: Vec<&str> = headers.iter().collect();
        return Err(OpsError::Usage(format!(
            "{file}:1: the header row must name the columns `ars` and `service` (and optionally `name`), \
             separated by `,` or `;`; it has {}",
            found.iter().map(|h| format!("`{h}`")).collect::<Vec<_>>().join(", ")
        )));
    };
    let name_at = column("name");
    // Before any run has recorded a service, every row would be refused alike: said once, below.
    let known_keys = if force { BTreeSet::new() } else { known_services(ctx).await? };
    let known = |service: &str| {
        if force || known_keys.is_empty() { Ok(()) } else { check_known(service, &known_keys).map_err(OpsError::Usage) }
    };
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for record in reader.records() {
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                let line = e.position().map_or(String::new(), |p| format!("{}:", line_at(&text, p.byte())));
                errors.push(format!("{file}:{line} {e}"));
                continue;
            }
        };
        // The line the record starts on, counting blank lines and quoted line breaks.
        // (from its byte offset: the csv crate's own line count misses blank lines)
        let line = record.position().map_or(0, |p| line_at(&text, p.byte()));
        let field = |at: usize| record.get(at).unwrap_or("").to_owned();
        let (ars, service) = (field(ars_at), field(service_at));
        let name = name_at.map(field).filter(|n| !n.is_empty());
        match check_adoption(&ars, &service, force).and_then(|()| known(&service)) {
            Ok(()) => rows.push((ars, service, name)),
            Err(e) => {
                // Excel reads an ARS as a number and drops its leading 0 (053… → 53…).
                let hint = if ars.len() == 11 && ars.starts_with('5') && ars.bytes().all(|b| b.is_ascii_digit()) {
                    format!(
                        " (it looks like 0{ars} without its leading 0, as Excel writes a number: format the \
                         column as text before saving)"
                    )
                } else {
                    String::new()
                };
                errors.push(format!("{file}:{line}: {e}{hint}"));
            }
        }
    }
    if !errors.is_empty() {
        errors.push("nothing imported: fix the rows above and import again".into());
        return Err(OpsError::Usage(errors.join("\n")));
    }
    if !force && known_keys.is_empty() && !rows.is_empty() {
        return Err(OpsError::Usage(format!(
            "{file}: nothing imported: no run has recorded a service of a source with `leika_key` yet, so the \
             LeiKa keys cannot be checked; run a migration first (`portal-bridge migrate`), or use --force to \
             import anyway"
        )));
    }
    let reason = reason.map(str::to_owned).unwrap_or_else(|| format!("import of {file}"));
    let mut added = 0;
    for (ars, service, name) in &rows {
        if add_checked(ctx, actor, ars, service, name.as_deref(), Some(&reason)).await? {
            added += 1;
        }
    }
    Ok(Imported { rows: rows.len(), added })
}

/// The text of a CSV file: UTF-8 (a byte order mark dropped), else Windows-1252 as Excel writes
/// "CSV (Trennzeichen-getrennt)" on a German system (ä, ö, ü, ß as single bytes).
fn csv_decode(bytes: &[u8]) -> String {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => encoding_rs::WINDOWS_1252.decode_without_bom_handling(bytes).0.into_owned(),
    }
}

/// The delimiter of a CSV text, from its header row: `;` (Excel with a German locale), a tab, or `,`.
fn csv_delimiter(text: &str) -> u8 {
    let header = text.lines().next().unwrap_or("");
    let count = |c: char| header.matches(c).count();
    match (count(','), count(';'), count('\t')) {
        (comma, semicolon, _) if semicolon > comma => b';',
        (0, 0, tabs) if tabs > 0 => b'\t',
        _ => b',',
    }
}

/// The 1-based line where a record starts whose position is the byte offset `at` in `text` (the
/// csv crate places it before the line break that ends the record before; blank lines are skipped).
fn line_at(text: &str, at: u64) -> usize {
    let bytes = text.as_bytes();
    let mut at = usize::try_from(at).unwrap_or(usize::MAX).min(bytes.len());
    while at < bytes.len() && matches!(bytes[at], b'\r' | b'\n') {
        at += 1;
    }
    bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leika_key_is_checked_against_the_known_ones() {
        let known: BTreeSet<String> = ["99108001001000", "99050012104000"].into_iter().map(String::from).collect();
        assert_eq!(check_known("99108001001000", &known), Ok(()));
        let err = check_known("99108001001100", &known).unwrap_err();
        assert!(err.contains("did you mean `99108001001000`?") && err.contains("--force"), "{err}");
        let err = check_known("11111111111111", &known).unwrap_err();
        assert!(err.contains("none of the 2 known keys") && !err.contains("did you mean"), "{err}");
        let err = check_known("99108001001000", &BTreeSet::new()).unwrap_err();
        assert!(err.contains("no run has recorded") && err.contains("portal-bridge migrate"), "{err}");
    }
}
