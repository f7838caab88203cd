//! Deterministic benchmark corpus: XDatenfelder 2.0 forms and ZuFi service feeds for the five
//! model regions, shaped like the real exports, plus bridge configs that migrate them.
//!
//! Every form and every service is a pure function of `(seed, region, index)`: form 17 of Aachen is
//! byte-identical in a corpus of 1,000 and in one of 10,000, so a bigger corpus is a superset.
//!
//! Shape (measured on the demo forms and the real exports in `../shared/fim/samples`):
//! - about 1.6–3 KB of XML per datenfeld/datenfeldgruppe use, elements in XSD order, 2-space indent;
//! - file sizes from 5 KB to 600 KB: 70 % 5–30 KB, 22 % 30–60 KB, 7 % 60–200 KB, 1 % 200–600 KB
//!   (log-uniform within each band; mean ≈ 31 KB, so 10,000 forms ≈ 310 MB);
//! - groups nested up to 4 levels, repeatable groups and fields (`0:*`, `1:*`, `1:3`, `2:5`),
//!   shared building blocks (the same G/F id and version with identical content in many forms, twice
//!   among the same siblings now and then), select fields referencing the 23 demo codelists,
//!   labels with text, rules on schema, groups and fields, praezisierung JSON, `&amp;` entities;
//! - 5 % of forms are Arbeitskopien (no version, status inVorbereitung).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Region id, display name, municipalities (name, ARS).
/// A region: id, display name, and its services (slug, title).
pub type Region = (&'static str, &'static str, &'static [(&'static str, &'static str)]);

pub const REGIONS: [Region; 5] = [
    ("aachen", "Aachen", &[("Stadt Aachen", "053340002002")]),
    (
        "bergisches-staedtedreieck",
        "Bergisches Städtedreieck",
        &[("Stadt Wuppertal", "051240000000"), ("Stadt Solingen", "051220000000"), ("Stadt Remscheid", "051200000000")],
    ),
    ("emscher-lippe", "Emscher-Lippe", &[("Stadt Gelsenkirchen", "055130000000"), ("Stadt Bottrop", "055120000000")]),
    ("owl", "Ostwestfalen-Lippe", &[("Stadt Bielefeld", "057110000000"), ("Stadt Paderborn", "057740032032")]),
    ("soest", "Soest", &[("Stadt Soest", "059740040040"), ("Kreis Soest", "059740000000")]),
];

/// The demo codelists (demo/codelists): file stem, C-id number. Version 2024-03-01 for all.
const CODELISTS: [(&str, u32); 23] = [
    ("anrede", 901),
    ("staatsangehoerigkeit", 902),
    ("gewerbeart", 903),
    ("zustimmung", 904),
    ("fahrzeugart", 905),
    ("hundegroesse", 906),
    ("familienstand", 907),
    ("betreuungsumfang", 908),
    ("sperrmuellart", 909),
    ("veranstaltungsart", 910),
    ("fundkategorie", 911),
    ("sondernutzungsart", 912),
    ("antragsart", 913),
    ("antragstellerart", 914),
    ("verkehrsflaeche", 915),
    ("anmeldegrund", 916),
    ("eigentumsverhaeltnis", 917),
    ("geschlecht", 918),
    ("meldebescheinigungsart", 919),
    ("wohngeldart", 920),
    ("verwandtschaftsverhaeltnis", 921),
    ("einkommensart", 922),
    ("fischereischeinart", 923),
];

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub forms_per_region: usize,
    pub services_per_region: usize,
    pub seed: u64,
}

/// What was generated.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    pub forms: usize,
    pub form_bytes: u64,
    pub largest_form: u64,
    pub smallest_form: u64,
    pub services: usize,
    pub service_bytes: u64,
}

/// Source ids of the forms and of the services of every region, in config order.
pub fn form_sources() -> Vec<String> {
    REGIONS.iter().map(|(r, _, _)| format!("{r}-forms")).collect()
}

pub fn service_sources() -> Vec<String> {
    REGIONS.iter().map(|(r, _, _)| format!("{r}-services")).collect()
}

/// Writes the corpus under `out` (`codelists/`, `<region>/forms/*.xml`, `<region>/services.json`).
pub fn generate(spec: Spec, out: &Path, demo_codelists: &Path) -> std::io::Result<Summary> {
    assert!(spec.forms_per_region < 10_000, "element ids have room for 9,999 forms per region");
    let mut summary = Summary { smallest_form: u64::MAX, ..Summary::default() };
    let codelists = out.join("codelists");
    std::fs::create_dir_all(&codelists)?;
    for entry in std::fs::read_dir(demo_codelists)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "xml") {
            std::fs::copy(&path, codelists.join(path.file_name().expect("a file")))?;
        }
    }
    for (r, (region, _, _)) in REGIONS.iter().enumerate() {
        let forms = out.join(region).join("forms");
        std::fs::create_dir_all(&forms)?;
        for i in 0..spec.forms_per_region {
            let form = form(spec.seed, r, i);
            let len = form.xml.len() as u64;
            std::fs::write(forms.join(&form.file_name), form.xml)?;
            summary.forms += 1;
            summary.form_bytes += len;
            summary.largest_form = summary.largest_form.max(len);
            summary.smallest_form = summary.smallest_form.min(len);
        }
        let feed = services(spec.seed, r, spec.services_per_region, spec.forms_per_region);
        summary.services += spec.services_per_region;
        summary.service_bytes += feed.len() as u64;
        std::fs::write(out.join(region).join("services.json"), feed)?;
    }
    Ok(summary)
}

/// One generated form.
pub struct Form {
    pub file_name: String,
    /// `id@version` (or `id` for an Arbeitskopie): the external id the shipped key expression gives.
    pub key: String,
    pub xml: String,
}

/// The schema id of form `index` of region `r`.
pub fn schema_id(r: usize, index: usize) -> String {
    format!("S9{r}{index:06}")
}

fn rng_for(seed: u64, parts: &[u64]) -> fastrand::Rng {
    // FNV-1a over the parts: stable across platforms and Rust versions (unlike DefaultHasher).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for p in parts {
        for b in p.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    fastrand::Rng::with_seed(h)
}

/// Target size of form `index` in bytes, from the size bands in the module docs.
pub fn target_size(rng: &mut fastrand::Rng) -> usize {
    let band = rng.u32(0..1000);
    let (lo, hi) = match band {
        0..700 => (5_000.0, 30_000.0),
        700..920 => (30_000.0, 60_000.0),
        920..990 => (60_000.0, 200_000.0),
        _ => (200_000.0, 600_000.0),
    };
    let t: f64 = rng.f64();
    (lo * f64::powf(hi / lo, t)) as usize
}

// ------------------------------------------------------------------ vocabulary

const OBJECTS: &[&str] = &[
    "Antragsteller",
    "Betriebsstätte",
    "Fahrzeug",
    "Hund",
    "Veranstaltung",
    "Grundstück",
    "Kind",
    "Haushaltsmitglied",
    "Bevollmächtigte Person",
    "Gewerbe",
    "Baumaßnahme",
    "Sondernutzung",
    "Wohnung",
    "Einkommen",
    "Fundsache",
    "Ehegatte",
    "Erziehungsberechtigte",
    "Einrichtung",
    "Zahlungsempfänger",
    "Verantwortliche Person",
];

const ATTRIBUTES: &[&str] = &[
    "Bezeichnung",
    "Beginn",
    "Ende",
    "Anzahl",
    "Betrag",
    "Art",
    "Nummer",
    "Datum",
    "Größe",
    "Nachweis",
    "Zeitraum",
    "Grund",
    "Telefonnummer",
    "E-Mail-Adresse",
    "Aktenzeichen",
    "Fläche in m²",
    "Gemarkung",
    "Flurstück",
    "Kennzeichen",
    "Bemerkung",
];

const SENTENCES: &[&str] = &[
    "Bitte geben Sie die Angaben so an, wie sie in Ihren Unterlagen stehen.",
    "Die Angabe wird für die Prüfung Ihres Antrags benötigt und nicht an Dritte weitergegeben.",
    "Wenn mehrere Personen betroffen sind, füllen Sie den Abschnitt für jede Person einzeln aus.",
    "Laden Sie den Nachweis als PDF oder Bild hoch; die Datei darf höchstens 10 MB groß sein.",
    "Fehlt diese Angabe, kann der Antrag nicht abschließend bearbeitet werden.",
    "Die Gebühr richtet sich nach der jeweils gültigen Verwaltungsgebührensatzung der Kommune.",
    "Änderungen sind der zuständigen Stelle unverzüglich mitzuteilen.",
    "Bei juristischen Personen (z. B. GmbH &amp; Co. KG) ist die vertretungsberechtigte Person anzugeben.",
    "Angaben zu Zeiträumen bitte im Format TT.MM.JJJJ machen.",
    "Die Behörde kann weitere Unterlagen nachfordern, wenn dies für die Entscheidung erforderlich ist.",
    "Das Feld ist nur auszufüllen, wenn die vorherige Frage mit Ja beantwortet wurde.",
    "Grundlage ist die Satzung der Stadt in der zum Zeitpunkt der Antragstellung geltenden Fassung.",
];

const LAWS: &[&str] = &[
    "§ 14 GewO",
    "§ 45 Abs. 1b StVO",
    "§ 18 StrWG NRW",
    "§ 24 KiBiz",
    "§ 17 BMG",
    "§ 3 HStG NRW",
    "§ 22 WoGG",
    "§ 12 LFischG NRW",
    "BauO NRW 2018 § 64",
    "§ 1310 BGB",
];

const FACHLICH: &[&str] = &[
    "Redaktion Modellregionen NRW",
    "Stadt Aachen, Fachbereich Bürgerservice",
    "Stadt Solingen, Stadtdienst Ordnung",
    "Stadt Gelsenkirchen, Referat Kinder, Jugend und Familie",
    "Stadt Bielefeld, Amt für Verkehr",
    "Kreis Soest, Abteilung Ordnung und Straßenverkehr",
];

fn pick<'a>(rng: &mut fastrand::Rng, items: &[&'a str]) -> &'a str {
    items[rng.usize(0..items.len())]
}

fn sentences(rng: &mut fastrand::Rng, max: usize) -> String {
    let n = rng.usize(1..=max);
    (0..n).map(|_| pick(rng, SENTENCES)).collect::<Vec<_>>().join(" ")
}

const STATUS: &str =
    r#"<xdf:status listURI="urn:xoev-de:fim:codeliste:xdatenfelder.status" listVersionID="1.0"><code>"#;

fn code_element(out: &mut String, pad: &str, name: &str, list: &str, code: &str) {
    let _ = writeln!(
        out,
        r#"{pad}<xdf:{name} listURI="urn:xoev-de:fim:codeliste:xdatenfelder.{list}" listVersionID="1.0"><code>{code}</code></xdf:{name}>"#
    );
}

fn text_element(out: &mut String, pad: &str, name: &str, text: &str) {
    if text.is_empty() {
        let _ = writeln!(out, "{pad}<xdf:{name}/>");
    } else {
        let _ = writeln!(out, "{pad}<xdf:{name}>{text}</xdf:{name}>");
    }
}

fn identifikation(out: &mut String, pad: &str, id: &str, version: Option<&str>) {
    let _ = writeln!(out, "{pad}<xdf:identifikation>");
    let _ = writeln!(out, "{pad}  <xdf:id>{id}</xdf:id>");
    if let Some(v) = version {
        let _ = writeln!(out, "{pad}  <xdf:version>{v}</xdf:version>");
    }
    let _ = writeln!(out, "{pad}</xdf:identifikation>");
}

/// Where an element's ids and versions come from.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    /// `None` for an Arbeitskopie: no versions anywhere, status inVorbereitung.
    released: bool,
    status: &'a str,
}

fn regel(out: &mut String, pad: &str, rng: &mut fastrand::Rng, id: &str, ctx: Ctx<'_>) {
    let _ = writeln!(out, "{pad}<xdf:regel>");
    let inner = format!("{pad}  ");
    identifikation(out, &inner, id, ctx.released.then_some("1.0"));
    text_element(out, &inner, "name", &format!("Prüfung {} {}", pick(rng, OBJECTS), pick(rng, ATTRIBUTES)));
    text_element(out, &inner, "bezeichnungEingabe", "");
    text_element(out, &inner, "beschreibung", "");
    text_element(out, &inner, "definition", &sentences(rng, 3));
    text_element(out, &inner, "bezug", pick(rng, LAWS));
    let _ = writeln!(out, "{inner}{STATUS}{}</code></xdf:status>", ctx.status);
    text_element(out, &inner, "fachlicherErsteller", pick(rng, FACHLICH));
    let script =
        if rng.u8(0..4) == 0 { "if (F.wert &lt; 0) { fehler('Der Wert darf nicht negativ sein'); }" } else { "" };
    text_element(out, &inner, "script", script);
    let _ = writeln!(out, "{pad}</xdf:regel>");
}

/// Ids of the shared building blocks (region digit 9): identical content wherever they occur.
const SHARED_FIELDS: u32 = 60;
const SHARED_GROUPS: u32 = 12;

struct FormBuilder<'a> {
    seed: u64,
    r: usize,
    index: usize,
    next_field: u32,
    next_group: u32,
    next_rule: u32,
    ctx: Ctx<'a>,
    out: String,
}

impl FormBuilder<'_> {
    fn fresh_field_id(&mut self) -> String {
        self.next_field += 1;
        format!("F{}{:04}{:03}", self.r, self.index, self.next_field % 1000)
    }
    fn fresh_group_id(&mut self) -> String {
        self.next_group += 1;
        format!("G{}{:04}{:03}", self.r, self.index, self.next_group % 1000)
    }
    fn fresh_rule_id(&mut self) -> String {
        self.next_rule += 1;
        format!("R{}{:04}{:03}", self.r, self.index, self.next_rule % 1000)
    }

    fn struktur_open(&mut self, pad: &str, anzahl: &str) {
        let _ = writeln!(self.out, "{pad}<xdf:struktur>");
        let _ = writeln!(self.out, "{pad}  <xdf:anzahl>{anzahl}</xdf:anzahl>");
        let _ = writeln!(self.out, "{pad}  <xdf:bezug/>");
        let _ = writeln!(self.out, "{pad}  <xdf:enthaelt>");
    }
    fn struktur_close(&mut self, pad: &str) {
        let _ = writeln!(self.out, "{pad}  </xdf:enthaelt>");
        let _ = writeln!(self.out, "{pad}</xdf:struktur>");
    }

    /// A datenfeld; `shared` = Some(k) for shared field k (content from its own seed).
    fn field(&mut self, pad: &str, rng: &mut fastrand::Rng, shared: Option<u32>) {
        let (id, mut rng) = match shared {
            Some(k) => (format!("F9{:07}", k), rng_for(self.seed, &[9, 1, u64::from(k)])),
            None => (self.fresh_field_id(), rng_for(rng.u64(..), &[])),
        };
        let rng = &mut rng;
        let ctx = if shared.is_some() { Ctx { released: true, status: "aktiv" } } else { self.ctx };
        let out = &mut self.out;
        let _ = writeln!(out, "{pad}<xdf:datenfeld>");
        let p = format!("{pad}  ");
        identifikation(out, &p, &id, ctx.released.then_some("1.0"));
        let name = format!("{} {}", pick(rng, ATTRIBUTES), pick(rng, OBJECTS));
        text_element(out, &p, "name", &name);
        text_element(out, &p, "bezeichnungEingabe", &name);
        if rng.bool() {
            text_element(out, &p, "bezeichnungAusgabe", &name);
        }
        let beschreibung = if rng.u8(0..3) == 0 { sentences(rng, 2) } else { String::new() };
        text_element(out, &p, "beschreibung", &beschreibung);
        let definition = if rng.u8(0..3) == 0 { sentences(rng, 2) } else { String::new() };
        text_element(out, &p, "definition", &definition);
        let bezug = if rng.u8(0..4) == 0 { pick(rng, LAWS) } else { "" };
        text_element(out, &p, "bezug", bezug);
        let _ = writeln!(out, "{p}{STATUS}{}</code></xdf:status>", ctx.status);
        if rng.bool() {
            text_element(out, &p, "fachlicherErsteller", pick(rng, FACHLICH));
        }
        code_element(out, &p, "schemaelementart", "schemaelementart", ["HAR", "RNG", "ABS"][rng.usize(0..3)]);
        let hilfe = if rng.u8(0..10) < 6 { sentences(rng, 3) } else { String::new() };
        text_element(out, &p, "hilfetextEingabe", &hilfe);
        text_element(out, &p, "hilfetextAusgabe", "");
        // feldart × datentyp, praezisierung, inhalt, codelist
        let roll = rng.u32(0..100);
        let (feldart, datentyp) = match roll {
            0..55 => ("input", "text"),
            55..63 => ("input", "date"),
            63..70 => ("input", "bool"),
            70..74 => ("input", "num"),
            74..78 => ("input", "num_int"),
            78..81 => ("input", "num_currency"),
            81..86 => ("input", "file"),
            86..96 => ("select", "text"),
            _ => ("label", "text"),
        };
        code_element(out, &p, "feldart", "feldart", feldart);
        code_element(out, &p, "datentyp", "datentyp", datentyp);
        let praezisierung = match (feldart, datentyp) {
            ("input", "text") => match rng.u8(0..6) {
                0 => r#"{"minLength":"5","maxLength":"5","pattern":"[0-9]{5}"}"#.to_owned(),
                1 => r#"{"pattern":"[A-ZÄÖÜ]{1,3}-[A-Z]{1,2} [0-9]{1,4}"}"#.to_owned(),
                2 => String::new(),
                _ => format!(r#"{{"minLength":"1","maxLength":"{}"}}"#, [60, 120, 255, 500, 2000][rng.usize(0..5)]),
            },
            ("input", "num" | "num_int" | "num_currency") => {
                format!(r#"{{"minValue":"0","maxValue":"{}"}}"#, [99, 9999, 999_999][rng.usize(0..3)])
            }
            _ => String::new(),
        };
        text_element(out, &p, "praezisierung", &praezisierung);
        let inhalt = match feldart {
            "label" => sentences(rng, 4),
            _ if datentyp == "num_currency" && rng.bool() => "26.00".to_owned(),
            _ => String::new(),
        };
        text_element(out, &p, "inhalt", &inhalt);
        if feldart == "select" {
            let (list, c) = CODELISTS[rng.usize(0..CODELISTS.len())];
            let _ = writeln!(out, "{p}<xdf:codelisteReferenz>");
            identifikation(out, &format!("{p}  "), &format!("C05000{c}"), None);
            let _ = writeln!(out, "{p}  <xdf:genericodeIdentification>");
            let _ = writeln!(
                out,
                "{p}    <xdf:canonicalIdentification>urn:de:nrw:modellregion:codeliste:{list}</xdf:canonicalIdentification>"
            );
            let _ = writeln!(out, "{p}    <xdf:version>2024-03-01</xdf:version>");
            let _ = writeln!(
                out,
                "{p}    <xdf:canonicalVersionUri>urn:de:nrw:modellregion:codeliste:{list}_2024-03-01</xdf:canonicalVersionUri>"
            );
            let _ = writeln!(out, "{p}  </xdf:genericodeIdentification>");
            let _ = writeln!(out, "{p}</xdf:codelisteReferenz>");
        }
        let with_rule = shared.is_none() && rng.u8(0..20) == 0;
        if with_rule {
            let rule = self.fresh_rule_id();
            regel(&mut self.out, &p, rng, &rule, ctx);
        }
        let _ = writeln!(self.out, "{pad}</xdf:datenfeld>");
    }

    fn field_anzahl(rng: &mut fastrand::Rng) -> &'static str {
        match rng.u32(0..100) {
            0..50 => "1:1",
            50..85 => "0:1",
            85..89 => "0:*",
            89..93 => "1:*",
            93..97 => "1:3",
            _ => "2:5",
        }
    }

    fn group_anzahl(rng: &mut fastrand::Rng) -> &'static str {
        match rng.u32(0..100) {
            0..50 => "1:1",
            50..75 => "0:1",
            75..90 => "0:*",
            90..95 => "1:*",
            _ => "1:5",
        }
    }

    /// A shared group: Anschrift-like blocks of 3–6 shared fields, identical wherever used.
    fn shared_group(&mut self, pad: &str, k: u32) {
        let mut rng = rng_for(self.seed, &[9, 2, u64::from(k)]);
        let rng = &mut rng;
        let id = format!("G9{:07}", k);
        let p = format!("{pad}  ");
        let _ = writeln!(self.out, "{pad}<xdf:datenfeldgruppe>");
        self.group_head(&p, rng, &id, Ctx { released: true, status: "aktiv" }, "HAR");
        let n = rng.u32(3..=6);
        for _ in 0..n {
            let f = rng.u32(1..=SHARED_FIELDS);
            let anzahl = Self::field_anzahl(rng);
            self.struktur_open(&p, anzahl);
            self.field(&format!("{p}    "), rng, Some(f));
            self.struktur_close(&p);
        }
        let _ = writeln!(self.out, "{pad}</xdf:datenfeldgruppe>");
    }

    fn group_head(&mut self, p: &str, rng: &mut fastrand::Rng, id: &str, ctx: Ctx<'_>, art: &str) {
        let out = &mut self.out;
        identifikation(out, p, id, ctx.released.then_some("1.1"));
        let name = format!("Angaben zu {}", pick(rng, OBJECTS));
        text_element(out, p, "name", &name);
        text_element(out, p, "bezeichnungEingabe", &name);
        text_element(out, p, "bezeichnungAusgabe", &name);
        let beschreibung = if rng.bool() { sentences(rng, 2) } else { String::new() };
        text_element(out, p, "beschreibung", &beschreibung);
        text_element(out, p, "definition", "");
        text_element(out, p, "bezug", "");
        let _ = writeln!(out, "{p}{STATUS}{}</code></xdf:status>", ctx.status);
        text_element(out, p, "fachlicherErsteller", pick(rng, FACHLICH));
        code_element(out, p, "schemaelementart", "schemaelementart", art);
        let hilfe = if rng.u8(0..3) == 0 { sentences(rng, 2) } else { String::new() };
        text_element(out, p, "hilfetextEingabe", &hilfe);
        text_element(out, p, "hilfetextAusgabe", "");
    }

    /// A form-specific group holding fields, shared groups and (above `depth` 0) subgroups, until
    /// `budget` bytes are written (at least one child).
    fn group(&mut self, pad: &str, rng: &mut fastrand::Rng, depth: u32, budget: usize) {
        let start = self.out.len();
        let id = self.fresh_group_id();
        let p = format!("{pad}  ");
        let _ = writeln!(self.out, "{pad}<xdf:datenfeldgruppe>");
        let ctx = self.ctx;
        self.group_head(&p, rng, &id, ctx, "RNG");
        if rng.u8(0..5) == 0 {
            let rule = self.fresh_rule_id();
            regel(&mut self.out, &p, rng, &rule, ctx);
        }
        let children = rng.usize(2..=9);
        let mut last_shared = None;
        for c in 0..children {
            if c > 0 && self.out.len() - start >= budget {
                break;
            }
            let remaining = budget.saturating_sub(self.out.len() - start);
            let roll = rng.u32(0..100);
            let inner = format!("{p}    ");
            if roll < 12 && depth < 3 && remaining > 6_000 {
                self.struktur_open(&p, Self::group_anzahl(rng));
                let sub = remaining / rng.usize(2..=4);
                self.group(&inner, rng, depth + 1, sub);
                self.struktur_close(&p);
            } else if roll < 24 {
                // A shared block; now and then the same one twice among the same siblings
                // (Wohnanschrift and Zustellanschrift), which gives path segments `G…~2`.
                let k = match last_shared {
                    Some(k) if rng.u8(0..4) == 0 => k,
                    _ => rng.u32(1..=SHARED_GROUPS),
                };
                last_shared = Some(k);
                self.struktur_open(&p, Self::group_anzahl(rng));
                self.shared_group(&inner, k);
                self.struktur_close(&p);
            } else {
                let shared = (rng.u8(0..4) == 0).then(|| rng.u32(1..=SHARED_FIELDS));
                self.struktur_open(&p, Self::field_anzahl(rng));
                self.field(&inner, rng, shared);
                self.struktur_close(&p);
            }
        }
        let _ = writeln!(self.out, "{pad}</xdf:datenfeldgruppe>");
    }
}

const TITLES: &[&str] = &[
    "Bewohnerparkausweis",
    "Hundesteuer-Anmeldung",
    "Sondernutzung Straßenraum",
    "Gewerbeanmeldung",
    "Baumfällgenehmigung",
    "Kita-Platz-Anmeldung",
    "Sperrmüllanmeldung",
    "Meldebescheinigung",
    "Fundsache melden",
    "Wohngeld-Kurzantrag",
    "Eheschließung Anmeldung",
    "Veranstaltungsanzeige",
    "Fischereischein",
    "Hundehaltung",
    "Anwohnerparken",
    "Grundsteuer Erlass",
    "Zweitwohnungsteuer",
    "Aufgrabungsgenehmigung",
];

fn slug(text: &str) -> String {
    let mut s = String::new();
    for c in text.to_lowercase().chars() {
        match c {
            'ä' => s.push_str("ae"),
            'ö' => s.push_str("oe"),
            'ü' => s.push_str("ue"),
            'ß' => s.push_str("ss"),
            'a'..='z' | '0'..='9' => s.push(c),
            _ if !s.ends_with('-') => s.push('-'),
            _ => {}
        }
    }
    s.trim_matches('-').to_owned()
}

/// Form `index` of region `r`.
pub fn form(seed: u64, r: usize, index: usize) -> Form {
    let mut rng = rng_for(seed, &[r as u64, index as u64, 1]);
    let rng = &mut rng;
    let target = target_size(rng);
    let released = rng.u8(0..20) != 0;
    let ctx = if released {
        Ctx { released: true, status: "aktiv" }
    } else {
        Ctx { released: false, status: "inVorbereitung" }
    };
    let id = schema_id(r, index);
    let version = released.then(|| format!("{}.{}", rng.u8(1..4), rng.u8(0..3)));
    let title = pick(rng, TITLES);
    let (_, region_name, municipalities) = REGIONS[r];
    let municipality = municipalities[rng.usize(0..municipalities.len())].0;
    let mut b = FormBuilder {
        seed,
        r,
        index,
        next_field: 0,
        next_group: 0,
        next_rule: 0,
        ctx,
        out: String::with_capacity(target + 8_192),
    };
    let out = &mut b.out;
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str("<xdf:xdatenfelder.stammdatenschema.0102 xmlns:xdf=\"urn:xoev-de:fim:standard:xdatenfelder_2\">\n");
    out.push_str("  <xdf:header>\n");
    let _ = writeln!(out, "    <xdf:nachrichtID>{:016X}</xdf:nachrichtID>", rng.u64(..));
    let _ = writeln!(
        out,
        "    <xdf:erstellungszeitpunkt>2025-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z</xdf:erstellungszeitpunkt>",
        rng.u8(1..=12),
        rng.u8(1..=28),
        rng.u8(0..24),
        rng.u8(0..60),
        rng.u8(0..60),
        rng.u16(0..1000)
    );
    out.push_str("  </xdf:header>\n  <xdf:stammdatenschema>\n");
    let p = "    ";
    identifikation(out, p, &id, version.as_deref());
    let name = format!("{title} {municipality} ({index})");
    text_element(out, p, "name", &name);
    text_element(out, p, "bezeichnungEingabe", &format!("Antrag: {title}"));
    let leika = format!("99{r}{:011}", index);
    text_element(
        out,
        p,
        "beschreibung",
        &format!("Stammdatenschema der Modellregion {region_name} mit Bezug auf die LeiKa-Leistung {title} ({leika})."),
    );
    text_element(out, p, "definition", &sentences(rng, 2));
    text_element(out, p, "bezug", &format!("{}, {}", pick(rng, LAWS), pick(rng, LAWS)));
    let _ = writeln!(out, "{p}{STATUS}{}</code></xdf:status>", ctx.status);
    text_element(out, p, "fachlicherErsteller", pick(rng, FACHLICH));
    if released {
        text_element(out, p, "freigabedatum", "2025-01-20");
        text_element(out, p, "veroeffentlichungsdatum", "2025-02-03");
    }
    if rng.bool() {
        text_element(out, p, "hilfetext", &sentences(rng, 2));
    }
    code_element(out, p, "ableitungsmodifikationenStruktur", "ableitungsmodifikationenStruktur", "3");
    code_element(out, p, "ableitungsmodifikationenRepraesentation", "ableitungsmodifikationenRepraesentation", "1");
    for _ in 0..rng.usize(0..=4) {
        let rule = b.fresh_rule_id();
        regel(&mut b.out, p, rng, &rule, ctx);
    }
    // Top level: a label first now and then, then groups (sections) and a few loose fields.
    let tail = "  </xdf:stammdatenschema>\n</xdf:xdatenfelder.stammdatenschema.0102>\n";
    let mut first = true;
    while first || b.out.len() + tail.len() < target {
        let remaining = target.saturating_sub(b.out.len() + tail.len());
        let roll = rng.u32(0..100);
        let inner = "        ";
        if roll < 25 || remaining < 2_500 {
            b.struktur_open(p, if first { "1:1" } else { FormBuilder::field_anzahl(rng) });
            b.field(inner, rng, None);
            b.struktur_close(p);
        } else {
            b.struktur_open(p, FormBuilder::group_anzahl(rng));
            let budget = remaining.min(rng.usize(4_000..=40_000));
            b.group(inner, rng, 0, budget);
            b.struktur_close(p);
        }
        first = false;
    }
    b.out.push_str(tail);
    let key = match &version {
        Some(v) => format!("{id}@{v}"),
        None => id.clone(),
    };
    Form { file_name: format!("{id}_{}.xml", slug(title)), key, xml: b.out }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

/// The services feed of region `r`: `count` records, service i linking form i (10 % without a form).
pub fn services(seed: u64, r: usize, count: usize, forms: usize) -> String {
    let (region, region_name, municipalities) = REGIONS[r];
    let mut out = String::from("[\n");
    for i in 0..count {
        let mut rng = rng_for(seed, &[r as u64, i as u64, 2]);
        let rng = &mut rng;
        let title = pick(rng, TITLES);
        let form_id = if i < forms && rng.u8(0..10) != 0 {
            let f = form_key(seed, r, i);
            json_str(&f)
        } else {
            "null".to_owned()
        };
        let niveau = ["basisregistrierung", "substanziell", "hoch"][rng.usize(0..3)];
        let leika = format!("99{r}{:011}", i);
        let synonyme: Vec<String> = (0..rng.usize(0..6)).map(|_| json_str(pick(rng, OBJECTS))).collect();
        let _ = write!(
            out,
            r#"  {{
    "leistung": {{
      "schluessel": "{leika}",
      "bezeichnung": {bez},
      "bezeichnung2": {bez2},
      "typisierung": "2/3",
      "teaser": {teaser},
      "kurztext": {kurz},
      "volltext": {voll},
      "rechtsgrundlage": {recht},
      "rechtsgrundlageLinks": [
        {{ "uri": "https://www.gesetze-im-internet.de/gewo/__14.html", "titel": {recht} }}
      ],
      "erforderliche_unterlagen": {unterlagen},
      "voraussetzungen": {voraus},
      "kosten": "Verwaltungsgebühr nach dem Gebührentarif, derzeit {fee},00 €.",
      "bearbeitungsdauer": "In der Regel {days} Arbeitstage.",
      "verfahrensablauf": {ablauf},
      "fristen": "",
      "formulare": "Online-Antrag über Kommunalportal.NRW.",
      "weiterfuehrende_informationen": "",
      "hinweise": {hinweise},
      "ansprechpunkt": "Bürgerbüro",
      "urlOnlineDienst": "https://{region}.kommunalportal.nrw/leistungen/{slug}-{i}",
      "fachlich_freigegeben_am": "2025-03-17",
      "fachlich_freigegeben_durch": {durch},
      "synonyme": [{syn}],
      "vertrauensniveau": "{niveau}",
      "formularId": {form_id}
    }},
    "organisationseinheit": ["#,
            bez = json_str(&format!("{title} ({region_name} {i})")),
            bez2 = json_str(&format!("{title} beantragen")),
            teaser = json_str(&sentences(rng, 2).replace("&amp;", "&")),
            kurz = json_str(&sentences(rng, 2).replace("&amp;", "&")),
            voll = json_str(&sentences(rng, 6).replace("&amp;", "&")),
            recht = json_str(pick(rng, LAWS)),
            unterlagen = json_str(&sentences(rng, 2).replace("&amp;", "&")),
            voraus = json_str(&sentences(rng, 2).replace("&amp;", "&")),
            fee = rng.u32(10..200),
            days = rng.u32(2..30),
            ablauf = json_str(&sentences(rng, 3).replace("&amp;", "&")),
            hinweise = json_str(&sentences(rng, 1).replace("&amp;", "&")),
            slug = slug(title),
            durch = json_str(pick(rng, FACHLICH)),
            syn = synonyme.join(", "),
        );
        let oes = rng.usize(1..=municipalities.len());
        for (k, (name, ars)) in municipalities.iter().take(oes).enumerate() {
            let sep = if k + 1 < oes { "," } else { "" };
            let _ = write!(
                out,
                r#"
      {{
        "name": {oe_name},
        "identifikator": "{ars}-{i}",
        "mandant": "{ars}",
        "beschreibung": {oe_desc},
        "anschrift": [
          {{ "typ": "Hausanschrift", "strasse": "Rathausplatz", "hausnummer": "{hn}", "postleitzahl": "{plz}", "ort": {ort} }}
        ],
        "kommunikation": [
          {{ "kanal": "Telefon", "kennung": "+49 {vorwahl} {tel}" }},
          {{ "kanal": "E-Mail", "kennung": "service{i}@{domain}.de" }}
        ]
      }}{sep}"#,
                oe_name = json_str(&format!("{name} - {}", pick(rng, ATTRIBUTES))),
                oe_desc = json_str(&sentences(rng, 1).replace("&amp;", "&")),
                hn = rng.u32(1..200),
                plz = 40_000 + rng.u32(0..20_000),
                ort = json_str(name.trim_start_matches("Stadt ").trim_start_matches("Kreis ")),
                vorwahl = rng.u32(200..3000),
                tel = rng.u32(10_000..999_999),
                domain = slug(name),
            );
        }
        let sep = if i + 1 < count { "," } else { "" };
        let _ = writeln!(out, "\n    ]\n  }}{sep}");
    }
    out.push_str("]\n");
    out
}

/// The item id (`id@version`) of form `index` of region `r`, without generating its whole body.
pub fn form_key(seed: u64, r: usize, index: usize) -> String {
    // The key only depends on the first draws of the form's generator; replay them.
    let mut rng = rng_for(seed, &[r as u64, index as u64, 1]);
    let _ = target_size(&mut rng);
    let released = rng.u8(0..20) != 0;
    let id = schema_id(r, index);
    if released { format!("{id}@{}.{}", rng.u8(1..4), rng.u8(0..3)) } else { id }
}

/// How a generated config delivers.
pub enum Delivery<'a> {
    Outbox(&'a Path),
    /// Base URL of the import API and the file holding the bearer token.
    Http {
        url: &'a str,
        token_file: &'a Path,
        concurrency: usize,
    },
}

/// A bridge config for the corpus at `corpus`: the ten sources of the five regions, as in
/// config/bridge.toml, without schedules.
pub fn config(corpus: &Path, mappings: &Path, database: &Path, delivery: &Delivery<'_>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Generated by benches/bridge.rs (portal-bridge benchmark corpus).");
    let _ = writeln!(out, "root = {}", toml_str(corpus));
    let _ = writeln!(out, "timezone = \"Europe/Berlin\"\n\n[database]\nurl = \"sqlite://{}\"\n", database.display());
    let outbox = match delivery {
        Delivery::Outbox(dir) => dir.to_path_buf(),
        Delivery::Http { .. } => corpus.join("unused-outbox"),
    };
    let _ = writeln!(
        out,
        "[paths]\nmappings = {}\ncodelists = \"codelists\"\noutbox = {}\n",
        toml_str(mappings),
        toml_str(&outbox)
    );
    for target in ["form-platform", "portal-xml"] {
        match delivery {
            Delivery::Outbox(_) => {
                let _ = writeln!(out, "[[target]]\nid = \"{target}\"\ndelivery = \"outbox\"\n");
            }
            Delivery::Http { url, token_file, concurrency } => {
                let _ = writeln!(
                    out,
                    "[[target]]\nid = \"{target}\"\ndelivery = \"http\"\n[target.http]\nurl = \"{url}\"\n\
                     token_file = {}\nconcurrency = {concurrency}\nrequests_per_second = 1000000\n",
                    toml_str(token_file)
                );
            }
        }
    }
    for (region, _, _) in REGIONS {
        let _ = writeln!(
            out,
            r#"[[source]]
id = "{region}-forms"
region = "{region}"
kind = "directory"
path = "{region}/forms"
include = ["*.xml"]
format = "xml"
key = '''
  to_entries[0].value.stammdatenschema.identifikation
  | (.version // "") as $v | if $v == "" then .id else "\(.id)@\($v)" end
'''
mappings = ["xdatenfelder2-to-form", "xdatenfelder2-to-xdf3"]

[[source]]
id = "{region}-services"
region = "{region}"
kind = "directory"
path = "{region}"
include = ["services.json"]
format = "json"
split = "array"
key = ".leistung.schluessel"
mappings = ["zufi-to-xzufi"]
leika_key = ".leistung.schluessel"
form_link = {{ source = "{region}-forms", id = ".leistung.formularId" }}
[source.params]
form_url_template = "https://formulare.kommunalportal.nrw/{region}/{{form}}"
"#
        );
    }
    out
}

fn toml_str(path: &Path) -> String {
    toml_quote(&path.display().to_string())
}

fn toml_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Changes `percent` % of the forms of the corpus (every (100/percent)-th form over all regions,
/// shifted by `round`): a new nachrichtID and a changed schema name, as a re-export would.
/// Returns the number of files changed.
pub fn change_forms(corpus: &Path, percent: f64, round: u32) -> std::io::Result<usize> {
    let step = (100.0 / percent).round().max(1.0) as usize;
    let mut files: Vec<PathBuf> = Vec::new();
    for (region, _, _) in REGIONS {
        let dir = corpus.join(region).join("forms");
        let mut region_files: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "xml"))
            .collect();
        region_files.sort();
        files.extend(region_files);
    }
    let mut changed = 0;
    for (i, file) in files.iter().enumerate() {
        if (i + round as usize * 7) % step != 0 {
            continue;
        }
        let text = std::fs::read_to_string(file)?;
        let id = format!("{:016X}", 0xC0FFEE_u64 + u64::from(round) * 1_000_003 + i as u64);
        let text = replace_first_between(&text, "<xdf:nachrichtID>", "</xdf:nachrichtID>", &id);
        let marker = "<xdf:stammdatenschema>";
        let at = text.find(marker).map_or(0, |a| a + marker.len());
        let (head, body) = text.split_at(at);
        let body = body.replacen("</xdf:name>", &format!(" – überarbeitet {round}</xdf:name>"), 1);
        std::fs::write(file, format!("{head}{body}"))?;
        changed += 1;
    }
    Ok(changed)
}

fn replace_first_between(text: &str, open: &str, close: &str, with: &str) -> String {
    let Some(a) = text.find(open).map(|a| a + open.len()) else { return text.to_owned() };
    let Some(b) = text[a..].find(close).map(|b| a + b) else { return text.to_owned() };
    format!("{}{with}{}", &text[..a], &text[b..])
}
