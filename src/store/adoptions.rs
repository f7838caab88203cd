//! Adoptions (Nachnutzung): which municipality (ARS) adopted which service (LeiKa key).

use std::collections::HashMap;

use serde::Serialize;

use super::{Store, StoreError, on_pool, opt_text};

/// One adoption as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Adoption {
    /// Amtlicher Regionalschlüssel of the municipality, 12 digits.
    pub ars: String,
    /// LeiKa key of the adopted service, 14 digits.
    pub service: String,
    pub name: Option<String>,
    pub created_at: String,
}

impl Store {
    /// Adds an adoption; returns false if it already existed (the name is then updated).
    pub async fn add_adoption(
        &self,
        ars: &str,
        service: &str,
        name: Option<&str>,
        at: &str,
    ) -> Result<bool, StoreError> {
        let existing = self.adoption_exists(ars, service).await?;
        let sql = "INSERT INTO adoptions (ars, service, name, created_at) VALUES ($1, $2, $3, $4) \
                   ON CONFLICT (ars, service) DO UPDATE SET name = COALESCE(excluded.name, adoptions.name)";
        on_pool!(self, pool => { sqlx::query(sql).bind(ars).bind(service).bind(opt_text(name)).bind(at).execute(pool).await?; });
        Ok(!existing)
    }

    async fn adoption_exists(&self, ars: &str, service: &str) -> Result<bool, StoreError> {
        let sql = "SELECT COUNT(*) FROM adoptions WHERE ars = $1 AND service = $2";
        let count: i64 = on_pool!(self, pool => sqlx::query_scalar(sql).bind(ars).bind(service).fetch_one(pool).await?);
        Ok(count > 0)
    }

    /// Removes an adoption; returns false if there was none.
    pub async fn remove_adoption(&self, ars: &str, service: &str) -> Result<bool, StoreError> {
        let sql = "DELETE FROM adoptions WHERE ars = $1 AND service = $2";
        let affected =
            on_pool!(self, pool => sqlx::query(sql).bind(ars).bind(service).execute(pool).await?.rows_affected());
        Ok(affected > 0)
    }

    /// All adoptions, by service then ARS.
    pub async fn adoptions(&self) -> Result<Vec<Adoption>, StoreError> {
        let sql = "SELECT ars, service, name, created_at FROM adoptions ORDER BY service, ars";
        Ok(on_pool!(self, pool => sqlx::query_as(sql).fetch_all(pool).await?))
    }

    /// The LeiKa keys the ledger holds for services that are not withdrawn, each with the source
    /// that delivered it, sorted (recorded by runs of sources with `leika_key`).
    pub async fn service_keys(&self) -> Result<Vec<(String, String)>, StoreError> {
        let sql = "SELECT DISTINCT leika_key, source_id FROM items WHERE leika_key IS NOT NULL \
                   AND status <> 'withdrawn' ORDER BY leika_key, source_id";
        Ok(on_pool!(self, pool => sqlx::query_as(sql).fetch_all(pool).await?))
    }

    /// All adoptions grouped by service (LeiKa key), each group sorted by ARS.
    pub async fn adoptions_by_service(&self) -> Result<HashMap<String, Vec<Adoption>>, StoreError> {
        let mut by_service: HashMap<String, Vec<Adoption>> = HashMap::new();
        for adoption in self.adoptions().await? {
            by_service.entry(adoption.service.clone()).or_default().push(adoption);
        }
        Ok(by_service)
    }
}

/// Why an adoption was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdoptionError {
    #[error("ARS `{0}` must be 12 digits (Amtlicher Regionalschlüssel, e.g. 053150000000 for Köln)")]
    ArsFormat(String),
    #[error("ARS `{0}` is outside NRW (NRW keys start with 05); use --force to adopt anyway")]
    OutsideNrw(String),
    #[error("LeiKa key `{0}` must be 14 digits (e.g. 99012001001000)")]
    LeikaFormat(String),
}

/// Checks an ARS; keys outside NRW need `force`.
pub fn check_ars(ars: &str, force: bool) -> Result<(), AdoptionError> {
    if ars.len() != 12 || !ars.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AdoptionError::ArsFormat(ars.into()));
    }
    if !ars.starts_with("05") && !force {
        return Err(AdoptionError::OutsideNrw(ars.into()));
    }
    Ok(())
}

/// Checks a LeiKa key.
pub fn check_leika(key: &str) -> Result<(), AdoptionError> {
    if key.len() != 14 || !key.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AdoptionError::LeikaFormat(key.into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ars_and_leika_keys_are_checked() {
        assert_eq!(check_ars("053150000000", false), Ok(()));
        assert_eq!(check_ars("05315000000", false), Err(AdoptionError::ArsFormat("05315000000".into())));
        assert_eq!(check_ars("05315000000x", false), Err(AdoptionError::ArsFormat("05315000000x".into())));
        assert_eq!(check_ars("091620000000", false), Err(AdoptionError::OutsideNrw("091620000000".into())));
        assert_eq!(check_ars("091620000000", true), Ok(()));
        assert_eq!(check_leika("99012001001000"), Ok(()));
        assert!(check_leika("9901200100100").is_err());
        assert!(check_leika("9901200100100a").is_err());
    }
}
