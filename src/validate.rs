//! Validation of documents before delivery: JSON Schema for JSON documents, XSD (libxml2) for XML documents.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use crate::codec::Format;
use crate::mapping::{Document, Mapping};

/// Why a schema could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SchemaError {
    pub path: PathBuf,
    pub message: String,
}

/// The compiled schemas of all mappings, by schema file.
#[derive(Default)]
pub struct Validators {
    json: HashMap<PathBuf, jsonschema::Validator>,
    xsd: HashMap<PathBuf, XsdValidator>,
}

impl std::fmt::Debug for Validators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validators").field("json", &self.json.keys()).field("xsd", &self.xsd.keys()).finish()
    }
}

impl Validators {
    /// Compiles the output schema of every mapping once.
    pub fn load<'a>(mappings: impl IntoIterator<Item = &'a Arc<Mapping>>) -> Result<Self, Vec<SchemaError>> {
        let mut validators = Validators::default();
        let mut errors = Vec::new();
        for mapping in mappings {
            if let Some(path) = &mapping.input_schema
                && !validators.xsd.contains_key(path)
            {
                match XsdValidator::load(path) {
                    Ok(v) => drop(validators.xsd.insert(path.clone(), v)),
                    Err(message) => errors.push(SchemaError { path: path.clone(), message }),
                }
            }
            let Some(path) = &mapping.output.schema else {
                continue;
            };
            let result = match mapping.output.format {
                Format::Json if !validators.json.contains_key(path) => {
                    load_json_schema(path).map(|v| drop(validators.json.insert(path.clone(), v)))
                }
                Format::Xml if !validators.xsd.contains_key(path) => {
                    XsdValidator::load(path).map(|v| drop(validators.xsd.insert(path.clone(), v)))
                }
                _ => Ok(()),
            };
            if let Err(message) = result {
                errors.push(SchemaError { path: path.clone(), message });
            }
        }
        if errors.is_empty() { Ok(validators) } else { Err(errors) }
    }

    /// Checks a record's bytes against an input XSD; the error lists the deviations.
    pub fn check_input(&self, schema: &Path, bytes: &[u8]) -> Result<(), String> {
        let validator = self.xsd.get(schema).ok_or("schema not loaded")?;
        validator.check(bytes).map_err(|e| format!("the record deviates from {}: {e}", file_name(schema)))
    }

    /// Checks a document against its mapping's schema; the error lists what is wrong and where.
    pub fn check(&self, schema: Option<&Path>, document: &Document) -> Result<(), String> {
        let Some(schema) = schema else { return Ok(()) };
        match document.format {
            Format::Json => {
                let validator = self.json.get(schema).ok_or("schema not loaded")?;
                let problems: Vec<String> = validator
                    .iter_errors(&document.tree)
                    .take(10)
                    .map(|e| format!("{} at `{}`", e, e.instance_path))
                    .collect();
                if problems.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{} does not accept the document: {}", file_name(schema), problems.join("; ")))
                }
            }
            Format::Xml => {
                let validator = self.xsd.get(schema).ok_or("schema not loaded")?;
                validator
                    .check(&document.bytes)
                    .map_err(|e| format!("{} does not accept the document: {e}", file_name(schema)))
            }
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

fn load_json_schema(path: &Path) -> Result<jsonschema::Validator, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let schema: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    jsonschema::options().should_validate_formats(true).build(&schema).map_err(|e| e.to_string())
}

type XsdJob = (Vec<u8>, mpsc::Sender<Result<(), String>>);

/// An XSD validator. libxml2's validation context is not thread-safe, so it lives on a thread of
/// its own and documents are sent to it; the thread ends when the validator is dropped.
pub struct XsdValidator {
    jobs: Mutex<mpsc::Sender<XsdJob>>,
}

impl XsdValidator {
    pub fn load(path: &Path) -> Result<Self, String> {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (jobs_tx, jobs_rx) = mpsc::channel::<XsdJob>();
        let path = path.to_path_buf();
        std::thread::Builder::new()
            .name(format!("xsd-{}", file_name(&path)))
            .spawn(move || {
                let mut parser = libxml::schemas::SchemaParserContext::from_file(&path.to_string_lossy());
                let mut context = match libxml::schemas::SchemaValidationContext::from_parser(&mut parser) {
                    Ok(context) => {
                        let _ = ready_tx.send(Ok(()));
                        context
                    }
                    Err(errors) => {
                        let _ = ready_tx.send(Err(describe(&errors)));
                        return;
                    }
                };
                for (bytes, reply) in jobs_rx {
                    let _ = reply.send(validate_bytes(&mut context, &bytes));
                }
            })
            .map_err(|e| e.to_string())?;
        ready_rx.recv().map_err(|_| "the XSD thread stopped".to_string())??;
        Ok(Self { jobs: Mutex::new(jobs_tx) })
    }

    pub fn check(&self, bytes: &[u8]) -> Result<(), String> {
        let (tx, rx) = mpsc::channel();
        self.jobs.lock().expect("not poisoned").send((bytes.to_vec(), tx)).map_err(|_| "the XSD thread stopped")?;
        rx.recv().map_err(|_| "the XSD thread stopped".to_string())?
    }
}

fn validate_bytes(context: &mut libxml::schemas::SchemaValidationContext, bytes: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
    let document = libxml::parser::Parser::default().parse_string(text).map_err(|e| format!("{e:?}"))?;
    context.validate_document(&document).map_err(|errors| describe(&errors))
}

fn describe(errors: &[libxml::error::StructuredError]) -> String {
    errors
        .iter()
        .take(10)
        .map(|e| {
            let message = e.message.as_deref().unwrap_or("unknown error").trim();
            match e.line {
                Some(line) => format!("line {line}: {message}"),
                None => message.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}
