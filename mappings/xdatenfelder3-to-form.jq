# XDatenfelder 3.0.0 Stammdatenschema → form-platform JSON (formatVersion 1.1). A datenfeldgruppe.0103
# message (one FIM building block) is taken too: it becomes a form whose one section is the group.
# Same document as xdatenfelder2-to-form; what differs in 3.0.0: praezisierung as attributes, inline
# werte, codelisteReferenz = genericodeIdentification with codeKey/nameKey/helpKey, feldart hidden and
# locked, datentyp text_latin/time/datetime, maxSize/mediaType, vorbefuellung, Gruppenart X,
# freitextRegel/skript/typ in rules, freigabestatus, dokumentsteckbrief, structured bezug.
# The format is documented in docs/form-platform.md and fixed by schemas/form-platform.schema.json.
#
# Rules this program keeps (see the docs for the why):
# - every datenfeld use becomes exactly one field element (checked at the end: a mismatch is an error);
# - optional values are guarded (`opt`, `get`, if/then/else) so no object constructor yields `empty`;
# - nothing that cannot be mapped is dropped silently: it becomes a note on the element plus a warning;
# - the output is a pure function of the record, $source, $item, the lookups and the codelists.

# ---------------------------------------------------------------- helpers
# (jaq's `del` does not keep the order of the remaining keys; this program filters with
# `with_entries(select(…))` instead, so the output key order is always the documented one.)

# `.[$k]` on objects, null on anything else (an empty element is "", never an object).
def get($k): if type == "object" then .[$k] else null end;

# The text of an element as a trimmed string ("" when absent or empty); a repeated element gives the
# texts that are not empty, one per line. (`xml_trim(f)` and `xml_trimmed(f)` are the engine's natives
# for the text of an element, with `f` for a repeated one: README.md, "Mapping files".)
def txt: xml_trim(map(txt) | map(select(. != "")) | join("\n"));

# Text or null: for optional values.
def opt: xml_trimmed(map(txt) | map(select(. != "")) | join("\n"));

# The value of a code element (<x listURI="…"><code>v</code></x>).
def code: if type == "object" then (.code | txt) else txt end;

def warning($code; $element; $message): {code: $code, elementId: $element, message: $message};

# Order-preserving de-duplication.
def uniq: reduce .[] as $x ([]; if any(.[]; . == $x) then . else . + [$x] end);

# A decimal number written as text (or already a number) → number; anything else → null.
# Deliberately strict: jaq's tonumber accepts JSON streams ("1,5" gives 1 and then an error)
# and huge exponents (infinity is not JSON).
# (The engine compiles each regex of the program once, so `test` is cheap.)
def decimal_text: test("^-?[0-9]{1,15}([.][0-9]{1,15})?$");

def number_of:
  if type == "number" then .
  elif type == "string" then
    (trim) as $t
    | if ($t | decimal_text) then ($t | tonumber) else null end
  else null end;

# A non-negative integer written as text (or a number) → number; anything else → null.
def length_of:
  number_of | if . != null and . >= 0 and . == floor then . else null end;

# ---------------------------------------------------------------- cardinality (struktur/anzahl)

# 1 to 9 ASCII digits → their number (as `tonumber` would give), without a regex.
def digits_value: reduce explode[] as $c (0; . * 10 + $c - 48);

def cardinality($element):
  (txt) as $a
  # the two values nearly every struktur has, without parsing
  | if $a == "1:1" then {min: 1, max: 1, required: true, repeatable: false, warnings: []}
    elif $a == "0:1" then {min: 0, max: 1, required: false, repeatable: false, warnings: []}
    else
      ($a | split(":")) as $p
      | if ($a | test("^[0-9]{1,9}:([0-9]{1,9}|[*])$")) then
          ($p[0] | digits_value) as $min
          | (if $p[1] == "*" then null else ($p[1] | digits_value) end) as $written
          | (if $written != null and $written < $min then $min else $written end) as $max
          | { min: $min, max: $max, required: ($min >= 1), repeatable: ($max == null or $max > 1),
              warnings: (if $written != null and $written < $min
                         then [warning("anzahl-invalid"; $element; "anzahl \"\($a)\": the maximum is below the minimum; taken as \($min):\($min)")]
                         elif $written == 0
                         then [warning("anzahl-invalid"; $element; "anzahl \"\($a)\": the element may never occur")]
                         else [] end) }
        else
          { min: 0, max: 1, required: false, repeatable: false,
            warnings: [warning("anzahl-invalid"; $element; "anzahl \"\($a)\" is not min:max; the element is taken as optional (0:1)")] }
        end
    end;

# ---------------------------------------------------------------- rules (kept as reviewer notes)

# A script or a stub of one: the editors' default `function script() {}` (any name, any parameters,
# a body of nothing but white space, as FIM tools write it) is no script, so it is null.
def script_text:
  opt
  | if . != null and test("^function\\s*[A-Za-z_$][A-Za-z0-9_$]*\\s*\\([^)]*\\)\\s*[{]\\s*[}]$") then null else . end;

def rules_of:
  if .regel == null then [] else
  [ .regel // [] | as_array | .[] | select(type == "object")
    | { id: (.identifikation | get("id") | opt),
        version: (.identifikation | get("version") | opt),
        name: (.name | opt),
        text: ((.freitextRegel | opt) // (.beschreibung | opt)),
        script: (.skript | script_text),
        type: (.typ | code | if . == "" then null else . end) } ]
  end;

# ---------------------------------------------------------------- praezisierung

# A pattern is used as a regular expression only if it looks like one and compiles. Prose such as
# "Codeliste Regionalschlüssel" or "Mehrfachauswahl" (no regex metacharacter at all, or two words of
# letters) is never emitted as a regex. jaq's regex engine lacks Unicode classes, so \p{…} is replaced by
# a plain letter for the syntax check only; the pattern itself is emitted unchanged.
def pattern_kind:
  if (test("[\\[\\](){}*+?\\\\^$|]") | not) then "prose"
  elif test("[A-Za-zÄÖÜäöüß]{4,} [A-Za-zÄÖÜäöüß]{4,}") then "prose"
  elif (try (gsub("\\\\[pP](\\{[^}]*\\}|[A-Za-z])"; "a") as $re | "" | test($re) | true) catch false) then "regex"
  else "invalid" end;

# praezisierung in 3.0.0 carries its constraints as attributes (@minLength, @maxLength, @minValue,
# @maxValue, @pattern). Text content has no defined meaning: it is kept as a note.
def praezisierung_object:
  if type == "object" then
    (.["#text"] | txt) as $t
    | with_entries(select(.key | startswith("@")) | .key |= ltrimstr("@"))
      + (if $t == "" then {} else {"#unparsed": $t} end)
  else (txt) as $t | if $t == "" then {} else {"#unparsed": $t} end
  end;

# Bounds are numbers; for date and time types a date/time text is kept as text.
def bound_of($datentyp):
  (number_of) as $n
  | if $n != null then $n
    elif ($datentyp == "date" or $datentyp == "datetime" or $datentyp == "time") and type == "string"
         and (trim | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9:.]+Z?)?$|^[0-9]{2}:[0-9]{2}(:[0-9]{2})?$"))
    then trim
    else null end;

# {validation, notes, warnings} from the constraint object.
def constraints($element; $datentyp):
  reduce to_entries[] as $e ({validation: {}, notes: [], warnings: []};
    ($e.key) as $k | ($e.value) as $v
    | if $k == "#unparsed" then
        .notes += ["praezisierung text (no defined meaning, kept as written): \($v)"]
        | .warnings += [warning("praezisierung-unparsed"; $element; "praezisierung text \($v | tojson) has no defined meaning in XDatenfelder 3.0.0; kept as a note")]
      elif $k == "minLength" or $k == "maxLength" then
        ($v | length_of) as $n
        | if $n != null then .validation[$k] = $n
          else .notes += ["\($k) (not a length, kept as written): \($v | tojson)"]
             | .warnings += [warning("praezisierung-invalid-value"; $element; "\($k) \($v | tojson) is not a non-negative integer; kept as a note")]
          end
      elif $k == "minValue" or $k == "maxValue" then
        ($v | bound_of($datentyp)) as $n
        | if $n != null then .validation[$k] = $n
          else .notes += ["\($k) (not a number, kept as written): \($v | tojson)"]
             | .warnings += [warning("praezisierung-invalid-value"; $element; "\($k) \($v | tojson) is not a number; kept as a note")]
          end
      elif $k == "pattern" then
        ($v | txt) as $p
        | if $p == "" then .
          else ($p | pattern_kind) as $kind
            | if $kind == "regex" then .validation.pattern = $p
              elif $kind == "prose" then
                .notes += ["pattern (prose, not a regular expression): \($p)"]
                | .warnings += [warning("pattern-not-regex"; $element; "pattern \($p | tojson) is prose, not a regular expression; kept as a note")]
              else
                .notes += ["pattern (invalid regular expression): \($p)"]
                | .warnings += [warning("pattern-invalid"; $element; "pattern \($p | tojson) is not a valid regular expression; kept as a note")]
              end
          end
      else
        .notes += ["praezisierung \($k): \($v | tojson)"]
        | .warnings += [warning("praezisierung-unknown-key"; $element; "praezisierung key \($k | tojson) is not supported; kept as a note")]
      end);

# The fixed key order of `validation`; absent constraints are left out.
def validation_order:
  . as $v
  | reduce ("minLength", "maxLength", "minValue", "maxValue", "pattern", "decimals", "charset", "maxSize", "mediaTypes") as $k
      ({}; if $v[$k] != null then .[$k] = $v[$k] else . end);

# ---------------------------------------------------------------- element type (feldart × datentyp)

# → {type, problem: null | [code, message]}; the tables are [lookups.feldart] and [lookups.datentyp].
def element_type($feldart; $datentyp):
  ($feldart | lookup("feldart")) as $f
  | ($datentyp | lookup("datentyp")) as $d
  | if $f == null then
      {type: "unsupported", problem: ["unsupported-feldart", "feldart \($feldart | tojson) (datentyp \($datentyp | tojson)) is not supported; shown as an unsupported element"]}
    elif $d == null then
      {type: "unsupported", problem: ["unsupported-datentyp", "datentyp \($datentyp | tojson) (feldart \($feldart | tojson)) is not supported; shown as an unsupported element"]}
    elif $f == "@datentyp" and $d == "unsupported" then
      {type: "unsupported", problem: ["unsupported-combination", "feldart \($feldart | tojson) with datentyp \($datentyp | tojson) has no form element; shown as an unsupported element"]}
    elif $f == "@datentyp" then {type: $d, problem: null}
    else {type: $f, problem: null} end;

# ---------------------------------------------------------------- codelists

# → {codelist, options, warnings, missing}. Only select fields resolve their options: inline werte first,
# else the genericode codelist of codelisteReferenz (columns chosen by codeKey/nameKey/helpKey).
# A reference without any version (canonicalIdentification only) resolves to the newest version at
# hand (`codelist($uri; null)`), named in `codelist.resolvedVersion` and in a warning.
# A missing list gives a warning (policy "warn") or an entry in `missing` {urn, field}: the program
# collects them all and stops once at the end, naming each.
def select_options($element; $fimId; $type):
  # (most fields: no select, no reference)
  if $type != "select" and .codelisteReferenz == null then {codelist: null, options: null, warnings: [], missing: []} else
  . as $n
  | ($n.codelisteReferenz | get("canonicalVersionUri") | opt) as $cvu
  | ($n.codelisteReferenz | get("canonicalIdentification") | opt) as $cu
  | ($n.codelisteReferenz | get("version") | opt) as $cv
  | (if $cvu == null and $cu == null then null
     else {id: null, canonicalUri: $cu, version: $cv, canonicalVersionUri: $cvu} end) as $ref
  # (the reference is kept as written; it is looked up as below)
  # A versionless reference as real exports write it: no version, and canonicalVersionUri `<canonical>_`.
  | (if $cv == null and $cu != null and $cvu == "\($cu)_" then null else $cvu end) as $cvu
  | [ $n.werte | get("wert") | as_array | .[] | select(type == "object")
      | {code: (.code | txt), name: ((.name | opt) // (.code | txt)), help: (.hilfe | opt)} ] as $werte
  | ($n.codeKey | opt) as $ck
  | ($n.nameKey | opt) as $nk
  | ($n.helpKey | opt) as $hk
  | if $type != "select" then
      {codelist: (if $ref == null then null else $ref + {resolved: false, resolvedVersion: null} end), options: null,
       warnings: [], missing: []}
    elif ($werte | length) > 0 then
      {codelist: (if $ref == null then null else $ref + {resolved: false, resolvedVersion: null} end), options: $werte,
       warnings: [], missing: []}
    elif $ref == null then
      {codelist: null, options: [],
       warnings: [warning("select-without-options"; $element; "select field with neither werte nor a codelisteReferenz: it has no options")],
       missing: []}
    else
      # (no version at all: the newest version at hand)
      ($cvu == null and $cv == null) as $unversioned
      | (if $cvu != null then codelist($cvu) // (if $cu != null and $cv != null then codelist($cu; $cv) else null end)
         elif $cu != null then codelist($cu; $cv)
         else null end) as $list
      | ($cvu // (if $cv != null then "\($cu)_\($cv)" elif $unversioned then "\($cu), no version" else $cu end)) as $urn
      | if $list != null then
          ($list.columns // []) as $columns
          | [ ["codeKey", $ck, "the key column is used"], ["nameKey", $nk, "the first non-key column is used"],
              ["helpKey", $hk, "the options have no help text"]
              | select(.[1] != null) | select(.[1] as $c | any($columns[]; . == $c) | not) ] as $missing
          | ($list.version | opt) as $version
          | def column($key; $fallback): if $key != null and any($columns[]; . == $key) then .[$key] else $fallback end;
          {codelist: ($ref + {resolved: true, resolvedVersion: $version}),
           options: [ $list.codes // [] | .[]
                      | {code: (column($ck; .code) | txt),
                         name: ((column($nk; .name) | opt) // (column($ck; .code) | txt)),
                         help: (if $hk == null then null else column($hk; null) | opt end)} ],
           warnings: ((if $unversioned
                       then [warning("codelist-newest-version"; $element; "codelist \($cu) has no version in the form; used the newest at hand, \($version // "(no version)")")]
                       else [] end)
                      + [ $missing[] | warning("codelist-column-missing"; $element; "codelist \($urn) has no column \(.[1] | tojson) (\(.[0])); \(.[2])") ]),
           missing: []}
        elif $source.on_missing_codelist == "warn" then
          {codelist: ($ref + {resolved: false, resolvedVersion: null}), options: [],
           warnings: [warning("missing-codelist"; $element; "missing codelist \($urn) for field \($fimId): the select has no options")],
           missing: []}
        else
          {codelist: ($ref + {resolved: false, resolvedVersion: null}), options: [], warnings: [],
           missing: [{urn: $urn, field: $fimId}]}
        end
    end
  end;

# maxSize and mediaType of file fields → {validation, notes, warnings}.
def file_constraints($element):
  (.maxSize | txt) as $size
  | [ .mediaType | as_array | .[] | txt | select(. != "") ] as $types
  | ($size | length_of) as $bytes
  | if $size == "" then {validation: {}, notes: [], warnings: []}
    elif $bytes != null and $bytes >= 1 then {validation: {maxSize: $bytes}, notes: [], warnings: []}
    else {validation: {}, notes: ["maxSize (not a positive integer, kept as written): \($size)"],
          warnings: [warning("file-constraint-invalid"; $element; "maxSize \($size | tojson) is not a positive integer; kept as a note")]}
    end
  | if ($types | length) > 0 then .validation.mediaTypes = $types else . end;

# ---------------------------------------------------------------- structure

# The uses listed by a node's struktur, in document order, each with its path segment: the FIM id,
# suffixed "~2", "~3" … when the same id occurs again among the same siblings. An enthaelt that holds
# neither a datenfeld nor a datenfeldgruppe yields a use of kind "empty" (reported, not an element).
def uses:
  [ .struktur // [] | as_array | .[] | select(type == "object") | . as $s
    | [ $s.enthaelt | as_array | .[] | get("datenfeldgruppe") | as_array | .[] ] as $groups
    | [ $s.enthaelt | as_array | .[] | get("datenfeld") | as_array | .[] ] as $fields
    | if ($groups | length) == 0 and ($fields | length) == 0 then {kind: "empty", anzahl: $s.anzahl}
      else ($groups[] | {kind: "group", node: ., anzahl: $s.anzahl, bezug: $s.bezug}),
           ($fields[] | {kind: "field", node: ., anzahl: $s.anzahl, bezug: $s.bezug})
      end ]
  | reduce .[] as $use ({seen: {}, out: []};
      if $use.kind == "empty" then .out += [$use]
      else
        ($use.node | get("identifikation") | get("id") | txt) as $fimId
        | (if $fimId == "" then "unidentified-\(.out | length + 1)" else $fimId end) as $base
        | ((.seen[$base] // 0) + 1) as $k
        | .seen[$base] = $k
        | .out += [$use + {fimId: $fimId, segment: (if $k == 1 then $base else "\($base)~\($k)" end)}]
      end)
  | .out;

# The warnings for the "empty" uses in a list made by `uses`.
def empty_uses_warnings($element):
  [ .[] | select(.kind == "empty")
    | warning("empty-struktur"; $element; "a struktur (anzahl \(.anzahl | txt | tojson)) contains neither a datenfeld nor a datenfeldgruppe") ];

# ---------------------------------------------------------------- faithful detail (formatVersion 1.1)

# The bezug entries (Rechtsbezug, bezug[0..n]) of a node as [{text, link}], in order: the text
# content (`#text` beside the attribute) and @link; blank entries are left out.
def legal_references:
  [ .bezug // [] | as_array | .[] | {text: (. | txt), link: (. | get("@link") | opt)} | select(.text != "") ];

# freigabestatus → {code, list, listVersion}, or null without a code. listURI as written, else the
# value the 3.0.0 XSD fixes; listVersionID as written (required by the XSD, no default).
def status_of:
  (code) as $c
  | if $c == "" then null
    else {code: $c,
          list: ((get("@listURI") | opt) // "urn:xoev-de:xprozess:codeliste:status"),
          listVersion: (get("@listVersionID") | opt)} end;

def join_path($prefix; $segment): if $prefix == "" then $segment else "\($prefix)/\($segment)" end;

def missing_id_warnings($use; $element):
  if $use.fimId == "" then [warning("missing-id"; $element; "the \($use.kind) has no identifikation/id; its element id is generated")] else [] end;

# One use (from `uses`) → {element, warnings, fields, groups}: the element, the warnings of it and of
# everything in it (in document order, the element's own first), and how many field and group elements
# it is and holds. Group uses recurse into their own uses; the sums are made on the way up, so the
# document is never walked again.
def element($prefix):
  . as $use
  | join_path($prefix; $use.segment) as $id
  | ($use.node | if type == "object" then . else {} end) as $n
  | ($use.anzahl | cardinality($id)) as $card
  | if $use.kind == "group" then
      ($n.art | code) as $art
      | ($n | uses) as $uses
      | [ $uses[] | select(.kind != "empty") | element($id) ] as $children
      | { element:
            { id: $id, kind: "group",
              fimId: (if $use.fimId == "" then null else $use.fimId end),
              fimVersion: ($n.identifikation | get("version") | opt),
              name: ($n.name | opt),
              label: (($n.bezeichnungEingabe | opt) // ($n.name | opt) // $id),
              help: ($n.hilfetextEingabe | opt),
              outputLabel: ($n.bezeichnungAusgabe | opt),
              outputHelp: ($n.hilfetextAusgabe | opt),
              description: ($n.beschreibung | opt),
              definition: ($n.definition | opt),
              status: ($n.freigabestatus | status_of),
              legalReferences: ($n | legal_references),
              useLegalReferences: ({bezug: $use.bezug} | legal_references),
              min: $card.min, max: $card.max, required: $card.required, repeatable: $card.repeatable,
              choice: ($art == "X"),
              rules: ($n | rules_of),
              notes: (if $art == "" or $art == "X" then [] else ["Gruppenart \($art | tojson) is not supported"] end),
              elements: [ $children[].element ] },
          warnings: (missing_id_warnings($use; $id) + $card.warnings
                     + (if $art == "" or $art == "X" then []
                        else [warning("unsupported-gruppenart"; $id; "Gruppenart \($art | tojson) is not supported; shown as a plain group")] end)
                     + ($uses | empty_uses_warnings($id))
                     + [ $children[].warnings[] ]),
          missing: [ $children[].missing[] ],
          fields: ([ $children[].fields ] | add // 0),
          groups: (([ $children[].groups ] | add // 0) + 1) }
    else
      ($n.feldart | code) as $feldart
      | ($n.datentyp | code) as $datentyp
      | element_type($feldart; $datentyp) as $et
      | (if $n.praezisierung == null then {validation: {}, notes: [], warnings: []}
         else $n.praezisierung | praezisierung_object | constraints($id; $datentyp) end) as $c
      | ($n | select_options($id; (if $use.fimId == "" then $id else $use.fimId end); $et.type)) as $o
      | ($n.inhalt | opt) as $inhalt
      | ($n | file_constraints($id)) as $f
      | { element:
            { id: $id, kind: "field",
              fimId: (if $use.fimId == "" then null else $use.fimId end),
              fimVersion: ($n.identifikation | get("version") | opt),
              name: ($n.name | opt),
              label: (($n.bezeichnungEingabe | opt) // ($n.name | opt) // $id),
              help: ($n.hilfetextEingabe | opt),
              outputLabel: ($n.bezeichnungAusgabe | opt),
              outputHelp: ($n.hilfetextAusgabe | opt),
              description: ($n.beschreibung | opt),
              definition: ($n.definition | opt),
              status: ($n.freigabestatus | status_of),
              legalReferences: ($n | legal_references),
              useLegalReferences: ({bezug: $use.bezug} | legal_references),
              type: $et.type,
              feldart: $feldart,
              datentyp: $datentyp,
              min: $card.min, max: $card.max, required: $card.required, repeatable: $card.repeatable,
              readOnly: ($feldart == "locked"),
              prefill: ($n.vorbefuellung | code | if . == "" then null else . end),
              default: (if $et.type == "info" then null else $inhalt end),
              text: (if $et.type == "info" then $inhalt else null end),
              validation: ($c.validation + $f.validation
                           + {decimals: ($et.type | lookup("decimals")), charset: ($datentyp | lookup("charset"))}
                           | validation_order),
              options: $o.options,
              codelist: $o.codelist,
              rules: ($n | rules_of),
              notes: ((if $et.problem == null then [] else [$et.problem[1]] end) + $c.notes + $f.notes) },
          warnings: (missing_id_warnings($use; $id) + $card.warnings
                     + (if $et.problem == null then [] else [warning($et.problem[0]; $id; $et.problem[1])] end)
                     + $c.warnings + $f.warnings + $o.warnings),
          missing: $o.missing,
          fields: 1, groups: 0 }
    end;

# ---------------------------------------------------------------- document

# [{urn, field}] → "missing codelists (2): urn:a_1 (fields F1, F7); urn:b, no version (field F9)"
# ("missing codelist urn:a_1 (field F1)" for one): each list once, in the order first needed, with
# the FIM ids of the fields that need it.
def missing_codelists_message:
  . as $m
  | ([ $m[].urn ] | uniq) as $urns
  | (if ($urns | length) == 1 then "missing codelist " else "missing codelists (\($urns | length)): " end)
    + ([ $urns[] as $u
         | ([ $m[] | select(.urn == $u) | .field ] | uniq) as $f
         | "\($u) (field\(if ($f | length) > 1 then "s" else "" end) \($f | join(", ")))" ] | join("; "));

def leika_keys:
  [ .[] | .text | [scan("[0-9]+")] | .[] | select(length == 14) ] | uniq;

# Independent of `uses`: every datenfeld / datenfeldgruppe element anywhere in the tree, counted by the
# engine's native `count_elements` (one pass in Rust instead of a jq `..` walk). If one sits where
# `uses` does not look, the counts differ and the item is quarantined instead of losing it.

# The pipeline only hands this mapping records whose root and namespace match the TOML; `map` and the
# fixture runner do not check, so the program does (an XDatenfelder 2.0 file must not pass as this version).
def namespaces: [ to_entries[] | select(.key == "@xmlns" or (.key | startswith("@xmlns:"))) | .value ];

# The two messages this mapping takes: a Stammdatenschema (a whole form) or a single Datenfeldgruppe
# (a FIM building block such as G60000000088 "Anschrift Inland"), which becomes a form of one section.
def message_types: ["xdatenfelder.stammdatenschema.0102", "xdatenfelder.datenfeldgruppe.0103"];

(if type == "object" then [ message_types[] as $t | select(has($t)) | $t ] | first // null else null end) as $type
| (if $type == null then error("not an \(message_types | join(" or ")) message") else . end)
| (.[$type]
   | if type != "object" then error("not an \($type) message")
     elif (namespaces | any(.[]; . == "urn:xoev-de:fim:standard:xdatenfelder_3.0.0") | not)
     then error("not an XDatenfelder message in namespace urn:xoev-de:fim:standard:xdatenfelder_3.0.0 (declared: \(namespaces | join(", ")))")
     else . end) as $message
| ($type == "xdatenfelder.datenfeldgruppe.0103") as $is_group
| (if $is_group then "datenfeldgruppe" else "stammdatenschema" end) as $kind
# $root: the element that describes the form (its id, title, provenance).
| ($message[$kind] | if type == "object" then . else error("the message has no \($kind)") end) as $root
| if ($root.identifikation | get("id") | txt) == "" then error("the \($kind) has no identifikation/id") else . end
# $schema: the node whose struktur lists the form's sections. A group message is read as a schema
# with one struktur 1:1 holding the group, so the group becomes the form's one section and every
# element id starts with the group's id (as it would if the group were used in a Stammdatenschema).
| (if $is_group then {struktur: [{anzahl: "1:1", enthaelt: {datenfeldgruppe: $root}}]} else $root end) as $schema
| ($schema | uses) as $top
| [ $top[] | select(.kind == "field") | element("") ] as $general
| [ $top[] | select(.kind == "group") | element("") ] as $top_groups
| [ $top_groups[] | .element | {id, kind: "section", generated: false} + with_entries(select(.key != "id" and .key != "kind")) ] as $groups
| (if ($general | length) > 0 then
     [ { id: "allgemeine-angaben", kind: "section", generated: true,
         fimId: null, fimVersion: null, name: null, label: "Allgemeine Angaben", help: null,
         outputLabel: null, outputHelp: null, description: null, definition: null, status: null,
         legalReferences: [], useLegalReferences: [],
         min: 1, max: 1, required: true, repeatable: false, choice: false,
         rules: [], notes: [], elements: [ $general[].element ] } ]
   else [] end) + $groups
| . as $sections
| ($root | legal_references) as $refs
# Counted on the whole message (for a group message this includes the group itself).
| ($message | count_elements("datenfeld")) as $fields_in
| ($message | count_elements("datenfeldgruppe")) as $groups_in
| ([ $general[], $top_groups[] | .warnings[] ]) as $element_warnings
| ([ $general[], $top_groups[] | .fields ] | add // 0) as $fields_out
| ([ $general[], $top_groups[] | .groups ] | add // 0) as $groups_out
| if $fields_out != $fields_in or $groups_out != $groups_in then
    error("\($fields_in) datenfeld and \($groups_in) datenfeldgruppe elements in the input, but \($fields_out) field and \($groups_out) group elements mapped: an element outside struktur/enthaelt?")
  else . end
# Every missing codelist at once (policy "quarantine"), each with the fields that need it.
| [ $general[], $top_groups[] | .missing[] ] as $missing
| if ($missing | length) > 0 then error($missing | missing_codelists_message) else . end
| { formatVersion: "1.1",
    id: ($root.identifikation | get("id") | txt),
    version: ($root.identifikation | get("version") | opt),
    # A Stammdatenschema has `bezeichnung`, a Datenfeldgruppe `bezeichnungEingabe`.
    title: (($root | if $is_group then .bezeichnungEingabe else .bezeichnung end | opt)
            // ($root.name | opt) // ($root.identifikation | get("id") | txt)),
    # (a Stammdatenschema has no bezeichnungAusgabe in 3.0.0; a Datenfeldgruppe has)
    outputTitle: ($root.bezeichnungAusgabe | opt),
    name: ($root.name | opt),
    description: ($root.beschreibung | opt),
    definition: ($root.definition | opt),
    # A group's hilfetextEingabe and rules belong to the group: they are on its section.
    helpText: (if $is_group then null else $root.hilfetext | opt end),
    counts: {fields: $fields_in, groups: $groups_in},
    sections: $sections,
    rules: (if $is_group then [] else $root | rules_of end),
    provenance: ({
      source: ($source.id // null),
      region: ($source.region // null),
      itemKey: ($item.key // null),
      standard: "XDatenfelder",
      standardVersion: "3.0.0",
      messageId: ($message.header | get("nachrichtID") | opt),
      createdAt: ($message.header | get("erstellungszeitpunkt") | opt),
      status: null,
      freigabestatus: ($root.freigabestatus | code | if . == "" then null else . end),
      dokumentsteckbrief: ($root.dokumentsteckbrief
                           | if type == "object" and ((get("id") | opt) != null)
                             then {id: (get("id") | opt), version: (get("version") | opt)} else null end),
      publishedAt: ($root.veroeffentlichungsdatum | opt),
      lastChangedAt: ($root.letzteAenderung | opt),
      legalReferences: $refs,
      leikaKeys: ($refs | leika_keys) }
      # Only a group message says what it is; a document without messageType is a Stammdatenschema.
      + (if $is_group then {messageType: $type} else {} end)),
    warnings: ((if $fields_in == 0 then [warning("schema-empty"; null; "the \($kind) contains no datenfeld")] else [] end)
               + ($top | empty_uses_warnings(null))
               + $element_warnings) }
# The same warnings once more for the bridge's migration log (the engine takes "#warnings" out of the
# document and logs each entry as a warning event of the item; the document itself is unchanged).
| . + {"#warnings": [ .warnings[] | "\(.code)\(if .elementId == null then "" else " (\(.elementId))" end): \(.message)" ]}
