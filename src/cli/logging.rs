//! Log lines on stderr: text (colour only on a terminal, never with `NO_COLOR`) or one JSON object per
//! line with the fields of the event and of its spans (`run_id`, `item`, `source`, `delivery_target` …)
//! at the top level, numbers as numbers.

use std::io::IsTerminal;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use super::LogFormat;

/// Whether text written to stderr may carry colour: on a terminal, and only when `NO_COLOR` is not
/// set to something (<https://no-color.org>).
pub fn colour_on_stderr() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Sets up the log on stderr: `RUST_LOG` if set, else warnings of everything and `verbose`'s level
/// (0: info, 1: debug, more: trace) of the bridge.
pub fn init(format: LogFormat, verbose: u8) {
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(format!("warn,portal_bridge={level}")));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(colour_on_stderr()).init(),
        LogFormat::Json => builder.with_ansi(false).fmt_fields(JsonFields::new()).event_format(FlatJson).init(),
    }
}

/// One JSON object per event: `timestamp`, `level`, `module` (the Rust module; `target` is not
/// used, it would read as a delivery target), the fields of the spans the event is in (outermost
/// first), then the event's own fields (`message` among them). A field whose text is a JSON array
/// or object (`sources = %json`) is written as that JSON.
pub struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        let meta = event.metadata();
        let mut object = Map::new();
        object.insert("timestamp".into(), Value::String(chrono::Utc::now().to_rfc3339()));
        object.insert("level".into(), Value::String(meta.level().to_string()));
        object.insert("module".into(), Value::String(meta.target().to_owned()));
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let Some(fields) = extensions.get::<FormattedFields<N>>() else { continue };
                if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(fields) {
                    for (name, value) in fields {
                        object.insert(name, lift(value));
                    }
                }
            }
        }
        event.record(&mut Fields(&mut object));
        let line = serde_json::to_string(&Value::Object(object)).map_err(|_| std::fmt::Error)?;
        writeln!(writer, "{line}")
    }
}

/// A field's text that is a JSON array or object becomes that JSON.
fn lift(value: Value) -> Value {
    if let Value::String(text) = &value
        && text.starts_with(['[', '{'])
        && let Ok(json) = serde_json::from_str(text)
    {
        return json;
    }
    value
}

/// Records an event's fields into a JSON object, each with its own type.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        let value = if field.name() == "message" { Value::String(text) } else { lift(Value::String(text)) };
        self.0.insert(field.name().to_owned(), value);
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        let value = Value::String(value.to_owned());
        self.0.insert(field.name().to_owned(), if field.name() == "message" { value } else { lift(value) });
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().to_owned(), Value::String(value.to_string()));
    }
}
