//! Validation of documents before delivery: JSON Schema for JSON documents, XSD (libxml2) for XML documents.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use libxml::parser::ParserOptions;
use libxml::tree::NodeType;

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
                let tree = document.json.as_ref().ok_or("a JSON document without its tree")?;
                let problems: Vec<String> =
                    validator.iter_errors(tree).take(10).map(|e| format!("{} at `{}`", e, e.instance_path())).collect();
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

/// A schema named by its directory and file (`xdatenfelder-3.0.0/xdatenfelder.xsd`): the official
/// XSDs of several standards share file names.
fn file_name(path: &Path) -> String {
    let parent = path.parent().and_then(Path::file_name).map(|p| p.to_string_lossy());
    match (parent, path.file_name()) {
        (Some(parent), Some(name)) => format!("{parent}/{}", name.to_string_lossy()),
        _ => path.display().to_string(),
    }
}

fn load_json_schema(path: &Path) -> Result<jsonschema::Validator, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let schema: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    jsonschema::options().should_validate_formats(true).build(&schema).map_err(|e| e.to_string())
}

type XsdJob = (Vec<u8>, mpsc::Sender<Result<(), String>>);

/// An XSD validator: a pool of threads, each with its own compiled schema and validation context
/// (libxml2's context is not thread-safe), taking documents from one queue; so documents of one
/// schema are checked on as many cores as the pool has. The threads end when the validator is
/// dropped.
pub struct XsdValidator {
    jobs: mpsc::Sender<XsdJob>,
    workers: usize,
}

/// Initialises libxml2 once per process. Its lazy initialisation is not thread-safe: two
/// validators loading their schemas at the same moment deadlocked in `xmlDictCreate`.
fn init_libxml2() {
    static INIT: std::sync::Once = std::sync::Once::new();
    // SAFETY: libxml2's documented process-wide initialiser, called exactly once, before any other use.
    INIT.call_once(|| unsafe { libxml::bindings::xmlInitParser() });
}

/// Threads per schema: the cores available, at most 4 (a compiled XDatenfelder or XZuFi schema
/// takes a few MB per thread; validation is about a tenth of a document's cost, docs/performance.md).
fn pool_size() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get).clamp(1, 4)
}

impl XsdValidator {
    /// Compiles the schema at `path` on a pool of [`pool_size`] threads.
    pub fn load(path: &Path) -> Result<Self, String> {
        Self::with_workers(path, pool_size())
    }

    /// Compiles the schema at `path` once on each of `workers` threads (at least one).
    pub fn with_workers(path: &Path, workers: usize) -> Result<Self, String> {
        init_libxml2();
        let workers = workers.max(1);
        let (ready_tx, ready_rx) = mpsc::channel();
        let (jobs_tx, jobs_rx) = mpsc::channel::<XsdJob>();
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        for n in 0..workers {
            let (path, ready_tx, jobs_rx) = (path.to_path_buf(), ready_tx.clone(), jobs_rx.clone());
            std::thread::Builder::new()
                .name(format!("xsd-{n}-{}", file_name(&path)))
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
                    drop(ready_tx);
                    loop {
                        // The lock is held only while taking the next document off the queue.
                        let job = jobs_rx.lock().unwrap_or_else(std::sync::PoisonError::into_inner).recv();
                        let Ok((bytes, reply)) = job else { return };
                        let _ = reply.send(validate_bytes(&mut context, &bytes));
                    }
                })
                .map_err(|e| e.to_string())?;
        }
        drop(ready_tx);
        for _ in 0..workers {
            ready_rx.recv().map_err(|_| "the XSD thread stopped".to_string())??;
        }
        Ok(Self { jobs: jobs_tx, workers })
    }

    /// Threads checking documents of this schema.
    pub fn workers(&self) -> usize {
        self.workers
    }

    pub fn check(&self, bytes: &[u8]) -> Result<(), String> {
        let (tx, rx) = mpsc::channel();
        self.jobs.send((bytes.to_vec(), tx)).map_err(|_| "the XSD thread stopped")?;
        rx.recv().map_err(|_| "the XSD thread stopped".to_string())?
    }
}

fn validate_bytes(context: &mut libxml::schemas::SchemaValidationContext, bytes: &[u8]) -> Result<(), String> {
    let document = parse_safely(bytes)?;
    context.validate_document(&document).map_err(|errors| describe(&errors))
}

/// Why a document is not handed to libxml2 (the same wording as the XML reader's).
const DOCTYPE_REFUSED: &str =
    "DOCTYPE declarations are not accepted (no DTD, entity declaration or external entity is processed)";

/// Parses a document for validation without letting it reach anything outside its own bytes.
///
/// A document with a DOCTYPE is refused before libxml2 sees it. libxml2 then parses with
/// [`parser_options`]: no network (`XML_PARSE_NONET`; libxml2 2.9 does try to load an external DTD
/// or parameter entity otherwise), no recovery; and without the options that would load a DTD
/// (`XML_PARSE_DTDLOAD`, `XML_PARSE_DTDATTR`, `XML_PARSE_DTDVALID`), substitute entities
/// (`XML_PARSE_NOENT`), process XIncludes (`XML_PARSE_XINCLUDE`) or lift the parser's size limits
/// (`XML_PARSE_HUGE`), none of which the `libxml` crate's `ParserOptions` sets. Should a DTD still end
/// up in the tree, the document is refused after parsing too.
fn parse_safely(bytes: &[u8]) -> Result<libxml::tree::Document, String> {
    if has_doctype(bytes) {
        return Err(DOCTYPE_REFUSED.into());
    }
    let document = libxml_parse(bytes)?;
    let dtd = document.as_node().get_child_nodes().iter().any(|n| n.get_type() == Some(NodeType::DTDNode));
    if dtd {
        return Err(DOCTYPE_REFUSED.into());
    }
    Ok(document)
}

/// The libxml2 parser options for documents to validate (see [`parse_safely`]).
fn parser_options() -> ParserOptions<'static> {
    ParserOptions {
        recover: false,
        no_net: true,
        no_def_dtd: true,
        no_error: true,
        no_warning: true,
        huge: false,
        ..ParserOptions::default()
    }
}

/// libxml2's parse with [`parser_options`], nothing else.
fn libxml_parse(bytes: &[u8]) -> Result<libxml::tree::Document, String> {
    init_libxml2();
    let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
    libxml::parser::Parser::default()
        .parse_string_with_options(text, parser_options())
        .map_err(|e| format!("not well-formed XML ({e:?})"))
}

/// True if the document has a DOCTYPE declaration: a quick search for `<!DOCTYPE`, then, only if
/// it occurs, a read of the markup (so that the text in a comment or CDATA section does not count).
/// A document that cannot be read that far counts as having one.
fn has_doctype(bytes: &[u8]) -> bool {
    const MARK: &[u8] = b"<!DOCTYPE";
    if !bytes.windows(MARK.len()).any(|w| w == MARK) {
        return false;
    }
    let mut reader = quick_xml::Reader::from_reader(bytes);
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::DocType(_)) | Err(_) => return true,
            Ok(quick_xml::events::Event::Eof) => return false,
            Ok(_) => {}
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    const XSD: &str =
        r#"<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"><xs:element name="r" type="xs:string"/></xs:schema>"#;

    /// A loopback listener that counts the connections made to it.
    struct Trap {
        listener: std::net::TcpListener,
        url: String,
    }

    impl Trap {
        fn new() -> Self {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.set_nonblocking(true).unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            Self { listener, url }
        }

        fn connections(&self) -> usize {
            let mut count = 0;
            while let Ok((mut stream, _)) = self.listener.accept() {
                let _ = stream.set_nonblocking(true);
                let _ = stream.read(&mut [0; 64]);
                count += 1;
            }
            count
        }
    }

    /// Hostile documents: external entities to a local file and to a URL, an external DTD, a
    /// parameter entity, and billion laughs.
    fn hostile(trap: &Trap, secret: &std::path::Path) -> Vec<String> {
        let (url, file) = (&trap.url, secret.display());
        let lol: String =
            (1..=9).map(|i| format!("<!ENTITY l{i} \"{}\">", format!("&l{};", i - 1).repeat(10))).collect();
        vec![
            format!("<!DOCTYPE r [<!ENTITY x SYSTEM \"file://{file}\">]><r>&x;</r>"),
            format!("<!DOCTYPE r [<!ENTITY x SYSTEM \"{url}/entity\">]><r>&x;</r>"),
            format!("<!DOCTYPE r SYSTEM \"{url}/dtd\"><r>a</r>"),
            format!("<!DOCTYPE r [<!ENTITY % p SYSTEM \"{url}/parameter\"> %p;]><r>a</r>"),
            format!("<!DOCTYPE r [<!ENTITY l0 \"lol\">{lol}]><r>&l9;</r>"),
        ]
    }

    #[test]
    fn a_document_with_a_doctype_is_refused_and_nothing_is_fetched_or_expanded() {
        let dir = tempfile::tempdir().unwrap();
        let xsd = dir.path().join("r.xsd");
        std::fs::write(&xsd, XSD).unwrap();
        let secret = dir.path().join("secret.txt");
        std::fs::write(&secret, "TOP-SECRET-MARKER").unwrap();
        let validator = XsdValidator::load(&xsd).unwrap();
        assert_eq!(validator.check(b"<r>a</r>"), Ok(()));
        let trap = Trap::new();
        for document in hostile(&trap, &secret) {
            let started = std::time::Instant::now();
            let err = validator.check(document.as_bytes()).unwrap_err();
            assert!(err.contains("DOCTYPE declarations are not accepted"), "{document}: {err}");
            assert!(!err.contains("TOP-SECRET-MARKER"), "{err}");
            assert!(started.elapsed() < std::time::Duration::from_secs(1), "{document}");
        }
        // `<!DOCTYPE` as text is no declaration.
        assert_eq!(validator.check(b"<r><![CDATA[<!DOCTYPE r>]]></r>"), Ok(()));
        assert_eq!(validator.check(b"<!-- <!DOCTYPE r> --><r>a</r>"), Ok(()));
        assert_eq!(trap.connections(), 0, "nothing was fetched");
    }

    /// A pool of validators answers each of many documents checked at once from several threads
    /// with its own verdict (none is lost, swapped or answered twice).
    #[test]
    fn a_pool_checks_documents_from_many_threads_each_with_its_own_verdict() {
        let dir = tempfile::tempdir().unwrap();
        let xsd = dir.path().join("r.xsd");
        std::fs::write(&xsd, XSD).unwrap();
        let validator = XsdValidator::with_workers(&xsd, 3).unwrap();
        assert_eq!(validator.workers(), 3);
        std::thread::scope(|scope| {
            for t in 0..6 {
                let validator = &validator;
                scope.spawn(move || {
                    for n in 0..50 {
                        let good = (t + n) % 3 != 0;
                        let document = if good { format!("<r>{t}-{n}</r>") } else { format!("<q>{t}-{n}</q>") };
                        let verdict = validator.check(document.as_bytes());
                        assert_eq!(verdict.is_ok(), good, "{document}: {verdict:?}");
                    }
                });
            }
        });
        let bad = dir.path().join("bad.xsd");
        std::fs::write(&bad, "<xs:schema xmlns:xs=\"http://www.w3.org/2001/XMLSchema\"><xs:element/></xs:schema>")
            .unwrap();
        assert!(XsdValidator::with_workers(&bad, 2).is_err(), "a schema that does not compile is refused");
    }

    /// Below the DOCTYPE check: the parser options alone keep libxml2 from reaching out. (Without
    /// `no_net`, libxml2 2.9 connects for the external DTD and the parameter entity.)
    #[test]
    fn libxml2_itself_neither_fetches_nor_substitutes_entities() {
        let options = parser_options();
        assert!(options.no_net && !options.recover && !options.huge);
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret.txt");
        std::fs::write(&secret, "TOP-SECRET-MARKER").unwrap();
        let trap = Trap::new();
        for document in hostile(&trap, &secret) {
            let started = std::time::Instant::now();
            if let Ok(parsed) = libxml_parse(document.as_bytes()) {
                let text = parsed.to_string();
                assert!(!text.contains("TOP-SECRET-MARKER"), "the file entity was substituted: {text}");
                assert!(!text.contains("lollollol"), "the entities were expanded: {} bytes", text.len());
                assert!(text.len() < 2 * document.len(), "{text}");
            }
            assert!(started.elapsed() < std::time::Duration::from_secs(1), "{document}");
            assert_eq!(trap.connections(), 0, "libxml2 fetched something for {document}");
        }
    }
}
