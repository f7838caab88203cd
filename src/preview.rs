//! `map`: one file through one mapping exactly as `migrate` would map it, with nothing delivered or recorded.
//!
//! With a source, the file is read as that source reads its entries (split into records, each with
//! the source's key expression, adoptions and form link), and each record is mapped with the
//! context `migrate` gives it ([`crate::source::Record::context`]). Without one, the file is one
//! record in the neutral context of the mapping fixtures. Either way the record is decoded without
//! forced arrays and shaped by the mapping's own `arrays` ([`Mapping::read`]), and the mapping
//! refuses a record it does not take with the reason `migrate` gives.

use std::path::Path;

use crate::codec;
use crate::config::{Config, Source};
use crate::mapping::{Document, Mapping, fixtures};
use crate::source::{self, Entry, Inputs};

/// One record of a previewed file: where it came from and its document, or why there is none.
#[derive(Debug)]
pub struct Previewed {
    /// The file, or `file#index` for a record of a feed.
    pub origin: String,
    pub document: Result<Document, String>,
}

/// Maps `file` with `mapping`; one result per record (one for a file that cannot be read at all).
/// `config` holds the codelists to use (for a run's: [`crate::pipeline::codelists::with_cached`]);
/// `inputs` the adoptions of a source with `leika_key`.
pub fn preview(
    config: &Config,
    mapping: &Mapping,
    source: Option<&Source>,
    inputs: &Inputs,
    file: &Path,
) -> Vec<Previewed> {
    let origin = file.display().to_string();
    let failed = |message: String| vec![Previewed { origin: origin.clone(), document: Err(message) }];
    let Some(source) = source else {
        let case = file.file_stem().unwrap_or_default().to_string_lossy().into_owned();
        let context = match fixtures::context_for(file, &case) {
            Ok(context) => context,
            Err(e) => return failed(e),
        };
        let bytes = match std::fs::read(file) {
            Ok(bytes) => bytes,
            Err(e) => return failed(e.to_string()),
        };
        let document = codec::decode(mapping.input.format, &bytes, &[], config.limits)
            .map_err(|e| e.to_string())
            .and_then(|decoded| {
                let tree = mapping.read(mapping.input.format, &decoded).map_err(|e| e.to_string())?;
                mapping.apply(&tree, &context, &config.codelists_val, config.budget).map_err(|e| e.to_string())
            });
        return vec![Previewed { origin, document }];
    };
    let entry = Entry {
        origin: origin.clone(),
        path: file.to_path_buf(),
        format: Some(source.format.unwrap_or(mapping.input.format)),
        content: None,
    };
    let records = match source::read_entry(source, &entry, inputs, config.limits, config.max_record_bytes) {
        Ok(records) => records,
        Err(e) => return failed(e.message().to_owned()),
    };
    records
        .into_iter()
        .map(|record| match record {
            Err(e) => Previewed { origin: e.origin().to_owned(), document: Err(e.message().to_owned()) },
            Ok(record) => {
                let document = mapping
                    .read(record.format, &record.decoded)
                    .and_then(|tree| {
                        mapping.apply(&tree, &record.context(source), &config.codelists_val, config.budget)
                    })
                    .map_err(|e| e.to_string());
                Previewed { origin: record.origin.clone(), document }
            }
        })
        .collect()
}
