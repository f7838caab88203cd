//! The quality report as text (tables per item and a summary) and as CSV (one row per finding).

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use super::{Category, Finding, ItemFindings, QualityReport, ReportError};

/// The CSV columns: the six a region filters by, then the reason of a quarantine and the count per target.
pub const CSV_HEADER: [&str; 8] =
    ["source", "item_key", "targets", "status", "category", "message", "cause", "occurrences"];

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(header.to_vec());
    table
}

/// `form-platform: delivered, portal-xml: unchanged`
pub fn statuses(item: &ItemFindings) -> String {
    item.statuses.iter().map(|(target, status)| format!("{target}: {status}")).collect::<Vec<_>>().join(", ")
}

/// The status of a finding's targets: one word if they agree, else `target: status` each.
pub fn finding_status(item: &ItemFindings, finding: &Finding) -> String {
    let words: Vec<(&str, &str)> =
        finding.targets.iter().map(|t| (t.as_str(), item.statuses.get(t).map(String::as_str).unwrap_or(""))).collect();
    match words.as_slice() {
        [(_, first), rest @ ..] if rest.iter().all(|(_, s)| s == first) => (*first).to_owned(),
        _ => words.iter().map(|(t, s)| format!("{t}: {s}")).collect::<Vec<_>>().join("; "),
    }
}

/// The category cell: the label, and for a quarantine the reason's label beneath.
fn category_cell(finding: &Finding) -> String {
    match finding.cause {
        Some(cause) => format!("{}\nGrund (reason): {}", finding.category.label(), cause.label()),
        None => finding.category.label().to_owned(),
    }
}

/// Per source, per item its statuses and a table of its findings; then a summary line per category.
pub fn text(report: &QualityReport) -> String {
    let mut out = String::new();
    out.push_str(
        "Qualitätsbericht (quality report): was die Bridge in den Quelldaten fand, je Element aus seiner letzten \
         Migration (what the bridge found wrong upstream, per item, from its last migration)\n",
    );
    for source in report.shown_sources() {
        let items: Vec<&ItemFindings> = report.items_of(source).collect();
        let with = items.iter().filter(|i| !i.findings.is_empty()).count();
        out.push_str(&format!("\nQuelle (source) {source}: {} item(s), {with} with findings\n", items.len()));
        for item in items {
            out.push_str(&format!("\n{}  [{}]\n", item.item, statuses(item)));
            if item.findings.is_empty() {
                out.push_str("  keine Befunde (no findings)\n");
                continue;
            }
            let mut findings = table(&["Kategorie (category)", "Ziele (targets)", "×", "Meldung (message)"]);
            for f in &item.findings {
                findings.add_row(vec![
                    category_cell(f),
                    f.targets.join(", "),
                    f.occurrences.to_string(),
                    f.message.clone(),
                ]);
            }
            out.push_str(&findings.to_string());
            out.push('\n');
        }
    }
    out.push_str("\nZusammenfassung (summary)\n");
    let mut summary = table(&["category", "Bezeichnung (label)", "Befunde (findings)", "Elemente (items)"]);
    for count in &report.summary.0 {
        summary.add_row(vec![
            count.category.id().to_owned(),
            count.category.label().to_owned(),
            count.findings.to_string(),
            count.items.to_string(),
        ]);
    }
    out.push_str(&summary.to_string());
    out.push('\n');
    out
}

/// One row per finding: [`CSV_HEADER`]; targets joined with `;`.
pub fn csv(report: &QualityReport) -> Result<String, ReportError> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(CSV_HEADER)?;
    for item in &report.items {
        for f in &item.findings {
            writer.write_record([
                item.source.as_str(),
                item.item.as_str(),
                &f.targets.join(";"),
                &finding_status(item, f),
                f.category.id(),
                &f.message,
                f.cause.map(Category::id).unwrap_or(""),
                &f.occurrences.to_string(),
            ])?;
        }
    }
    let bytes = writer.into_inner().map_err(|e| ReportError::Csv(e.into_error().into()))?;
    Ok(String::from_utf8(bytes).expect("CSV of UTF-8 strings is UTF-8"))
}
