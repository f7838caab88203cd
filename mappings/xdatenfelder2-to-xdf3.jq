# XDatenfelder 2.0 Stammdatenschema → XDatenfelder 3.0.0 xdatenfelder.stammdatenschema.0102.
# How and why: docs/xdf2-to-xdf3.md. Element order follows xdatenfelder-baukasten.xsd 3.0.0; every
# optional value is guarded (null writes nothing), so no element vanishes through `empty`.

# ---- text helpers -------------------------------------------------------------------------------

# The text of an element: a string as is, the #text of an element with attributes, "" if absent.
# An element that XDatenfelder allows once but that occurs several times (an array) stops the item:
# its text is never written as JSON text into an XML element. (`xml_text(f)` and its kin are the
# engine's natives for this, with `f` for a repeated element: README.md, "Mapping files".)
def repeated: error("an element that XDatenfelder 2.0 allows once occurs \(length) times (\(map(tostring | .[0:40]) | join(" | ")))");
def text: xml_text(repeated);

# The text, or null if the element is absent or blank (2.0 requires many elements that are empty).
def nonblank: xml_nonblank(repeated);

# The trimmed text, or null if it is blank.
def trimmed: xml_trimmed(repeated);

# Applies f unless the value is null.
def opt(f): if . == null then null else f end;

# The code of a code-typed element (<xdf:feldart listURI="…"><code>input</code></xdf:feldart>).
def code: if type == "object" then (.code // "" | xml_trim(repeated)) else xml_trim(repeated) end;

# A list that writes nothing when it is empty.
def nonempty: if length == 0 then null else . end;

# f on each item when the element repeats (invalid in 2.0, but never dropped), else f.
def each(f): if type == "array" then map(f) else f end;

# A string of ASCII digits, at least one. (The engine compiles each regex of the program once.)
def all_digits: test("^[0-9]+$");

# ---- the FIM 2→3 id and version rule ------------------------------------------------------------

# S00000121 → S00000000121: the Unternummernkreis 000 goes after the first 3 characters.
# Ids that are not letter + 8 digits (local ids such as F00-<uuid>) stay as they are.
def xdf3_id:
  trim
  | if test("^[A-Z][0-9]{8}$")
    then .[0:3] + "000" + .[3:] else . end;

# 1.0 → 1.0.0; anything else (already x.y.z, or broken) is kept and left to the XSD to judge.
def xdf3_version:
  trim | if test("^[0-9]+\\.[0-9]+$") then . + ".0" else . end;

# Element ids quoted in the prose of a rule ("F00001028 Krankenversicherungsträger") get the same rule.
def xdf3_ids_in_text: gsub("\\b(?<k>[FG][0-9]{2})(?<n>[0-9]{6})\\b"; "\(.k)000\(.n)");

# (xdf3_id and trimmed | opt(xdf3_version) written out: this runs for every element.)
def identifikation:
  { "xdf:id": (.id | xml_trim(repeated) | if test("^[A-Z][0-9]{8}$") then .[0:3] + "000" + .[3:] else . end),
    "xdf:version": (.version | xml_trim(repeated)
      | if . == "" then null elif test("^[0-9]+\\.[0-9]+$") then . + ".0" else . end) };

# ---- shared parts -------------------------------------------------------------------------------

# 2.0 has one bezug string per element; 3.0.0 has bezug[0..n] (Rechtsbezug). Each 2.0 bezug becomes one
# 3.0.0 bezug with its text as written (trimmed): nothing is split, so no reference is cut in two
# (a line break or ";" may sit inside one reference). A blank bezug writes nothing. An invalid repeated
# 2.0 bezug keeps every occurrence.
def rechtsbezuege:
  if . == null then null else [as_array[] | trimmed | select(. != null)] | nonempty end;

# A script that is no rule: blank, or an empty stub such as `function script() {}`.
def stub_script: text | trim == "" or test("^\\s*function\\s+script\\s*\\(\\s*\\)\\s*\\{\\s*\\}\\s*;?\\s*$");

def freigabestatus:
  (.status | code) as $status
  # the key "<status>/<state>" of [lookups.freigabestatus], looked up directly (as `lookup` does)
  | $__lookups.freigabestatus[$status
      + (if (.identifikation.version | xml_trim(repeated)) == "" then "/arbeitskopie"
         elif (.freigabedatum | xml_trim(repeated)) == "" then "/version"
         else "/freigegeben" end)] as $code
  | if $code == null then
      error("\(.identifikation.id | text): XDatenfelder 2.0 status `\($status)` has no freigabestatus (see [lookups.freigabestatus])")
    else
      { "@listURI": "urn:xoev-de:xprozess:codeliste:status", "@listVersionID": "2020-03-19", "code": $code }
    end;

# Looks a code up in a table of the mapping file; an unknown code stops the item with a clear reason.
def checked($table; $id):
  code as $c
  | $__lookups[$table][$c] // error("\($id): \($table) `\($c)` is not an XDatenfelder 2.0 code (see [lookups.\($table)])");

def coded($list; $version; $code): { "@listURI": $list, "@listVersionID": $version, "code": $code };

# Values of 2.0 elements that 3.0.0 has no element for ([[name, value or null], …]), as one line for beschreibung.
def carried($pairs):
  [ $pairs[] | select(.[1] != null) | "\(.[0]): \(.[1])" ]
  | if length == 0 then [] else ["Aus XDatenfelder 2.0 übernommen (in 3.0.0 ohne eigenes Element): " + join("; ")] end;

def fields($names): [ $names[] as $f | [$f, (.[$f] | nonblank)] ];

# beschreibung = the 2.0 beschreibung, then the notes (blank-line separated); null if there is nothing.
# (Without notes, as for most elements, that is the beschreibung alone.)
def beschreibung($notes):
  if $notes == [] then .beschreibung | nonblank
  else [ (.beschreibung | nonblank), $notes[] ] | map(select(. != null)) | if length == 0 then null else join("\n\n") end end;

# AllgemeineAngaben 3.0.0: identifikation name beschreibung? definition? bezug* freigabestatus
# statusGesetztAm? statusGesetztDurch? gueltigAb? gueltigBis? versionshinweis? veroeffentlichungsdatum?
# letzteAenderung (relation* and stichwort* have no 2.0 source).
def allgemein($stand; $notes):
  { "xdf:identifikation": (.identifikation | identifikation),
    "xdf:name": (.name | text),
    "xdf:beschreibung": beschreibung($notes),
    "xdf:definition": (.definition | nonblank),
    "xdf:bezug": (.bezug | rechtsbezuege),
    "xdf:freigabestatus": freigabestatus,
    "xdf:statusGesetztAm": (.freigabedatum | trimmed),
    "xdf:statusGesetztDurch": (.fachlicherErsteller | nonblank),
    "xdf:gueltigAb": (.gueltigAb | trimmed),
    "xdf:gueltigBis": (.gueltigBis | trimmed),
    "xdf:versionshinweis": (.versionshinweis | nonblank),
    "xdf:veroeffentlichungsdatum": (.veroeffentlichungsdatum | trimmed),
    "xdf:letzteAenderung": $stand };

# Schemaelementangaben 3.0.0: bezeichnungEingabe bezeichnungAusgabe? schemaelementart hilfetextEingabe? hilfetextAusgabe?
def schemaelement:
  (.identifikation.id | text) as $id
  | { "xdf:bezeichnungEingabe": (.bezeichnungEingabe | text),
      "xdf:bezeichnungAusgabe": (.bezeichnungAusgabe | nonblank),
      "xdf:schemaelementart": coded("urn:xoev-de:fim:codeliste:xdatenfelder.schemaelementart"; "1.0";
          (.schemaelementart | checked("schemaelementart"; $id))),
      "xdf:hilfetextEingabe": (.hilfetextEingabe | nonblank),
      "xdf:hilfetextAusgabe": (.hilfetextAusgabe | nonblank) };

# Regel 3.0.0: identifikation name beschreibung? freitextRegel? bezug* fachlicherErsteller? letzteAenderung
# typ skript?. 2.0 rules are prose: definition → freitextRegel (element ids converted), script → skript,
# typ K (komplexe Regel) as the FIM XSLT does, since a 2.0 rule says nothing about its kind.
def regel($stand):
  { "xdf:identifikation": (.identifikation | identifikation),
    "xdf:name": (.name | text),
    "xdf:beschreibung": beschreibung(carried(
        fields(["bezeichnungEingabe", "bezeichnungAusgabe", "gueltigAb", "gueltigBis", "versionshinweis",
                "freigabedatum", "veroeffentlichungsdatum"])
        + [["status", (.status | code | if . == "" or . == "aktiv" then null else . end)]])),
    "xdf:freitextRegel": (.definition | nonblank | opt(xdf3_ids_in_text)),
    "xdf:bezug": (.bezug | rechtsbezuege),
    "xdf:fachlicherErsteller": (.fachlicherErsteller | nonblank),
    "xdf:letzteAenderung": $stand,
    "xdf:typ": coded("urn:xoev-de:fim:codeliste:xdatenfelder.regeltyp"; "1.0"; "K"),
    "xdf:skript": (.script | if stub_script then null else text end) };

def regeln($stand):
  if .regel == null then null  # (most elements: no rule)
  else .regel // [] | each(regel($stand)) | if type == "array" then nonempty else . end end;

# ---- Datenfeld ----------------------------------------------------------------------------------

# Does a 2.0 "pattern" look like a regular expression? Prose such as "Codeliste Regionalschlüssel" or
# "Mehrfachauswahl" has none of the regex metacharacters and is not one.
def regex_like: test("[\\[\\](){}*+?|\\\\^$]");

# 2.0 praezisierung is a JSON string ({"minLength":"1","maxLength":"50"}); 3.0.0 has attributes.
# Returns {attrs, notes}: the attributes that are valid in 3.0.0, and a note for everything else
# (prose patterns, unknown keys, values of the wrong type, text that is not a JSON object).
def praezisierung:
  if . == null then { attrs: null, notes: [] } else  # (most fields: none)
  xml_trim(repeated) as $raw
  | if $raw == "" then { attrs: null, notes: [] }
    else
      (try ($raw | fromjson) catch null) as $json
      | if ($json | type) != "object" then { attrs: null, notes: [$raw] }
        else
          reduce ($json | to_entries[]) as $e ({ a: {}, notes: [] };
            ($e.value | if type == "string" then trim elif . == null then "" else tojson end) as $v
            | if $v == "" then .
              elif $e.key == "minLength" and ($v | all_digits) then .a.minLength = $v
              # digits, not all zero
              elif $e.key == "maxLength" and ($v | test("^[0-9]*[1-9][0-9]*$")) then .a.maxLength = $v
              elif $e.key == "minValue" or $e.key == "maxValue" then .a[$e.key] = $v
              elif $e.key == "pattern" and ($v | regex_like) then .a.pattern = $v
              else .notes += ["\($e.key): \($v)"] end)
          | { attrs: (.a | if . == {} then null else
                { "@minLength": .minLength, "@maxLength": .maxLength, "@minValue": .minValue,
                  "@maxValue": .maxValue, "@pattern": .pattern } end),
              notes: .notes }
        end
    end
  | .notes |= (if length == 0 then [] else
      ["Präzisierung aus XDatenfelder 2.0, in 3.0.0 nicht als Attribut darstellbar: " + join("; ")] end)
  end;

# The genericode identification of a field's codelisteReferenz and the list it resolves to: by
# canonicalVersionUri, else by canonicalIdentification and version; a reference with neither version
# nor canonicalVersionUri takes the newest version at hand (the pre-pass below warns with the version).
def codelist_ref:
  (.codelisteReferenz.genericodeIdentification // {}) as $g
  | ($g.canonicalIdentification | trimmed) as $canonical
  | ($g.version | trimmed) as $version
  | ($g.canonicalVersionUri | trimmed) as $uri
  # A versionless reference as real exports write it: no version, and canonicalVersionUri `<canonical>_`.
  | ($version == null and $canonical != null and $uri == "\($canonical)_") as $unversioned
  | (if $unversioned then null else $uri end) as $uri
  | { canonical: $canonical, version: $version, uri: $uri,
      list: ((if $uri != null then codelist($uri) else null end)
             // (if $canonical == null then null
                 elif $version != null then codelist($canonical; $version)
                 elif $uri == null then codelist($canonical; null)
                 else null end)) };

# codelisteReferenz 3.0.0 is the genericode identification alone (the 2.0 C-id has no place in it).
# codeKey/nameKey come from the codelist directory when the list is there: key column and first other column.
# A missing list is handled once for the whole form (see the message below).
def codeliste:
  if .codelisteReferenz == null then { ref: null, list: null } else  # (most fields: none)
  codelist_ref as $r
  | { ref: { "xdf:canonicalIdentification": $r.canonical, "xdf:version": $r.version, "xdf:canonicalVersionUri": $r.uri },
      list: $r.list }
  end;

# Datenfeld 3.0.0: AllgemeineAngaben, Schemaelementangaben, feldart datentyp praezisierung? inhalt?
# vorbefuellung werte? codelisteReferenz? codeKey? nameKey? helpKey? regel* maxSize? mediaType*.
def datenfeld($stand):
  (.identifikation.id | text) as $id
  # (the same praezisierung text converts the same: kept per record, as the fields are)
  | (.praezisierung | memo(praezisierung)) as $p
  | codeliste as $c
  | allgemein($stand; $p.notes) + schemaelement
  + { "xdf:feldart": coded("urn:xoev-de:fim:codeliste:xdatenfelder.feldart"; "2.0"; (.feldart | checked("feldart"; $id))),
      "xdf:datentyp": coded("urn:xoev-de:fim:codeliste:xdatenfelder.datentyp"; "2.0"; (.datentyp | checked("datentyp"; $id))),
      "xdf:praezisierung": $p.attrs,
      "xdf:inhalt": (.inhalt | nonblank),
      "xdf:vorbefuellung": coded("urn:xoev-de:fim:codeliste:xdatenfelder.vorbefuellung"; "1.0"; "keine"),
      "xdf:codelisteReferenz": $c.ref,
      "xdf:codeKey": ($c.list | opt(.key)),
      "xdf:nameKey": ($c.list | opt(.key as $k | [.columns[] | select(. != $k)] | .[0])),
      "xdf:regel": regeln($stand) };

# ---- Struktur and Datenfeldgruppe (recursive) ---------------------------------------------------

def strukturen($stand; $owner):
  # 3.0.0 requires at least one struktur in a schema and in a group; 2.0 allows none. Rather than
  # inventing a placeholder field, the item stops with a clear reason.
  def nonempty_of($id):
    as_array
    | if length == 0 then error("\($id): no struktur; XDatenfelder 3.0.0 requires at least one in a schema or group")
      else . end;
  # A Datenfeld or Datenfeldgruppe converts the same wherever it is used (a function of itself and
  # $stand): each is converted once per run of the mapping, its later uses come from the engine's memo.
  def go:
    { "xdf:anzahl": (.anzahl | xml_trim(repeated)),
      "xdf:bezug": (.bezug | rechtsbezuege),
      "xdf:enthaelt": (.enthaelt
        | { "xdf:datenfeld": (.datenfeld | opt(each(memo($stand; datenfeld($stand))))),
            "xdf:datenfeldgruppe": (.datenfeldgruppe | opt(each(memo($stand;
                allgemein($stand; []) + schemaelement
                + { "xdf:regel": regeln($stand),
                    "xdf:struktur": ((.identifikation.id | text) as $id | .struktur | nonempty_of($id) | map(go)) })))) }) };
  .struktur | nonempty_of($owner) | map(go);

# ---- what the whole form needs ------------------------------------------------------------------

# The schema and every element in it, each use once (the same element can be used several times).
def elements:
  ., (.struktur | as_array[] | .enthaelt | (.datenfeld | as_array[]), (.datenfeldgruppe | as_array[] | elements));

# Every codelist the form needs that is not at hand, grouped by list, with the fields that need it:
# [{urn, version, fields: [id, …]}], in the order of the list's URN.
def missing_codelists($refs):
  [ $refs[] | select(.ref.list == null) ]
  | group_by(.ref.uri // .ref.canonical // "")
  | map(.[0].ref as $r
        | { urn: ($r.uri // $r.canonical // "(no identification)"),
            # a canonicalVersionUri names its version itself
            version: (if $r.uri != null or $r.canonical == null then null else $r.version // "" end),
            fields: (map(.id) | unique) });

def missing_text:
  "\(.urn)\(if .version == null then "" elif .version == "" then ", no version" else " version \(.version)" end) (field\(if (.fields | length) > 1 then "s" else "" end) \(.fields | join(", ")))";

# ($elements: [elements], walked once for the codelist references, the warnings and the id table.)
# Warnings for what the form's source got wrong and the output cannot show: stub scripts, codelist
# references without a version (the newest list at hand is used), missing codelists (with `warn`).
def form_warnings($elements; $refs; $missing):
  [ $elements[] | .regel | as_array[] | select(.script != null and (.script | nonblank) != null and (.script | stub_script))
    | (.identifikation.id | xml_trim(repeated)) ] | unique
  | map("rule \(.): its script is an empty stub (function script() {}); no skript is written")
  + ([ $refs[] | select(.ref.list != null and .ref.version == null and .ref.uri == null) ]
     | group_by(.ref.canonical)
     | map("codelist \(.[0].ref.canonical) has no version in the form (field\(if length > 1 then "s" else "" end) \(map(.id) | unique | join(", "))); used the newest at hand, \(.[0].ref.list.version)"))
  + ($missing | map("missing codelist \(missing_text): the reference is written without codeKey and nameKey"));

# ---- the message --------------------------------------------------------------------------------

# A Stammdatenschema becomes a 3.0.0 Stammdatenschema; a Datenfeldgruppe message (a FIM building block)
# a 3.0.0 Datenfeldgruppe message. (The pipeline and `map` only hand over records whose root element
# and namespace the mapping file names.)
(if has("xdatenfelder.datenfeldgruppe.0103") then "xdatenfelder.datenfeldgruppe.0103"
 else "xdatenfelder.stammdatenschema.0102" end) as $type
| .[$type] as $msg
| ($type == "xdatenfelder.datenfeldgruppe.0103") as $is_group
| ($msg.header.erstellungszeitpunkt | trimmed
   // error("the 2.0 header has no erstellungszeitpunkt (needed for header and letzteAenderung)")) as $stand
| (if $is_group then $msg.datenfeldgruppe else $msg.stammdatenschema end)
| if type != "object" then error("the message has no \(if $is_group then "datenfeldgruppe" else "stammdatenschema" end)") else . end
| (.identifikation.id | text | xdf3_id) as $id
# The form's elements, walked once for the codelist references, the warnings and the id table.
| [ elements ] as $elements
| [ $elements[] | select(.codelisteReferenz != null) | { id: (.identifikation.id | xml_trim(repeated)), ref: codelist_ref } ] as $refs
| missing_codelists($refs) as $missing
| if ($missing | length) > 0 and $source.on_missing_codelist == "quarantine" then
    error(if ($missing | length) == 1 then "missing codelist \($missing[0] | missing_text)"
          else "missing codelists (\($missing | length)): \($missing | map(missing_text) | join("; "))" end
          + ": not in the codelist directory (on_missing_codelist = quarantine)")
  else . end
| { "xdf:nachrichtID": ($msg.header.nachrichtID | xml_trim(repeated)),
    "xdf:erstellungszeitpunkt": $stand,
    "xdf:referenzID": ($msg.header.referenzID | trimmed) } as $header
| { "#warnings": form_warnings($elements; $refs; $missing),
    # The 2.0 id of every converted id, so that the engine's String.Latin warnings name what the
    # region finds in its export (F00003284, not F00000003284).
    # (Each distinct id converted once, in sorted order; an id the rule leaves as it is is not listed.)
    "#ids": (reduce ([ $elements[] | ., (.regel | as_array[]) | .identifikation.id | xml_trim(repeated) | select(. != "") ]
                     | unique[]) as $source_id
               ({}; ($source_id | xdf3_id) as $written | if $written == $source_id then . else .[$written] = $source_id end)) }
+ if $is_group then
    { "xdf:xdatenfelder.datenfeldgruppe.0103": {
        "@xmlns:xdf": "urn:xoev-de:fim:standard:xdatenfelder_3.0.0",
        "xdf:header": $header,
        # The group converted as if it were used once in a schema (the same rules as for every group).
        "xdf:datenfeldgruppe": ({ struktur: [{ anzahl: "1:1", enthaelt: { datenfeldgruppe: . } }] }
                                | strukturen($stand; $id) | .[0]["xdf:enthaelt"]["xdf:datenfeldgruppe"]) } }
  else
    { "xdf:xdatenfelder.stammdatenschema.0102": {
        "@xmlns:xdf": "urn:xoev-de:fim:standard:xdatenfelder_3.0.0",
        "xdf:header": $header,
        "xdf:stammdatenschema": (
          allgemein($stand; carried(fields(["bezeichnungAusgabe"])))
          + { "xdf:bezeichnung": (.bezeichnungEingabe | text),
              "xdf:hilfetext": (.hilfetext | nonblank),
              "xdf:ableitungsmodifikationenStruktur": coded("urn:xoev-de:fim:codeliste:xdatenfelder.ableitungsmodifikationenStruktur"; "1.0";
                  (.ableitungsmodifikationenStruktur | code)),
              "xdf:ableitungsmodifikationenRepraesentation": coded("urn:xoev-de:fim:codeliste:xdatenfelder.ableitungsmodifikationenRepraesentation"; "1.0";
                  (.ableitungsmodifikationenRepraesentation | code)),
              # Required reference; 2.0 has none. Derived: the converted S-id with D for S (S05000000101 → D05000000101).
              "xdf:dokumentsteckbrief": { "xdf:id": ("D" + $id[1:]) },
              "xdf:regel": regeln($stand),
              "xdf:struktur": strukturen($stand; $id) }) } }
  end
