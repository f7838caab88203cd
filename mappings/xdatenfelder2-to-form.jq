# XDatenfelder 2.0 Stammdatenschema → form-platform JSON (formatVersion 1.1).
# The format is documented in docs/form-platform.md and fixed by schemas/form-platform.schema.json.
#
# Rules this program keeps (see the docs for the why):
# - every datenfeld use becomes exactly one field element (checked at the end: a mismatch is an error);
# - optional values are guarded (`opt`, `get`, if/then/else) so no object constructor yields `empty`;
# - nothing that cannot be mapped is dropped silently: it becomes a note on the element plus a warning;
# - the output is a pure function of the record, $source, $item, the lookups and the codelists.

# ---------------------------------------------------------------- helpers
# (jaq's `del` does not keep the order of the remaining keys; this program lists the keys it keeps
# instead, so the output key order is always the documented one.)

# `.[$k]` on objects, null on anything else (an empty element is "", never an object).
def get($k): if type == "object" then .[$k] else null end;

# The text of an element as a trimmed string ("" when absent or empty); a repeated element gives the
# texts that are not empty, one per line. (`xml_trim(f)` and `xml_trimmed(f)` are the engine's natives
# for the text of an element, with `f` for a repeated one: README.md, "Mapping files".)
def txt: xml_trim(map(txt) | map(select(. != "")) | join("\n"));

# Text or null: for optional values.
def opt: xml_trimmed(map(txt) | map(select(. != "")) | join("\n"));

# The value of a code element (<x listURI="…"><code>v</code></x>).
def code: if type == "object" then .code else . end | txt;

# The sum of the numbers f yields (0 for none).
def sum(f): reduce f as $x (0; . + $x);

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
    trim | if decimal_text then tonumber else null end
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
        text: ((.definition | opt) // (.beschreibung | opt)),
        script: (.script | script_text),
        type: null } ]
  end;

# ---------------------------------------------------------------- praezisierung

# A pattern is used as a regular expression only if it looks like one and compiles. Prose such as
# "Codeliste Regionalschlüssel" or "Mehrfachauswahl" (no regex metacharacter at all, or two words of
# letters) is never emitted as a regex. jaq's regex engine lacks Unicode classes, so \p{…} is replaced by
# a plain letter for the syntax check only; the pattern itself is emitted unchanged.
def pattern_kind:
  if (test("[\\[\\](){}*+?\\\\^$|]") | not) then "prose"
  elif test("[A-Za-zÄÖÜäöüß]{4,} [A-Za-zÄÖÜäöüß]{4,}") then "prose"
  elif (try ((if test("\\\\[pP]") then gsub("\\\\[pP](\\{[^}]*\\}|[A-Za-z])"; "a") else . end) as $re | "" | test($re) | true)
        catch false) then "regex"
  else "invalid" end;

# praezisierung in 2.0 is a JSON object inside the XML text, with string values. It may be empty, a bare
# number ("5") or not JSON at all ("1..31"): everything that is not one JSON object is kept as a note.
# (Input: the trimmed, non-empty text.)
def praezisierung_object:
  . as $t
  | (try [fromjson] catch null) as $parsed
  | if ($parsed | type) == "array" and ($parsed | length) == 1 and ($parsed[0] | type) == "object"
    then $parsed[0]
    else {"#unparsed": $t} end;

# Bounds are numbers; for date and time types a date/time text is kept as text.
def bound_of($datentyp):
  (number_of) as $n
  | if $n != null then $n
    elif type == "string" and ($datentyp == "date" or $datentyp == "datetime" or $datentyp == "time")
         and (trim | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9:.]+Z?)?$|^[0-9]{2}:[0-9]{2}(:[0-9]{2})?$"))
    then trim
    else null end;

# The praezisierung element → {validation, notes, warnings}; $decimals (or null) is the element type's
# validation.decimals. Each constraint is read once by its key; `validation` has the fixed key order
# minLength, maxLength, minValue, maxValue, pattern, decimals, and absent constraints are left out.
# Every key that does not give a constraint becomes a note and a warning, in the order of the keys.
def constraints($element; $datentyp; $decimals):
  (txt) as $t
  | if $t == "" then
      # (no praezisierung)
      {validation: (if $decimals == null then {} else {decimals: $decimals} end), notes: [], warnings: []}
    else
      ($t | praezisierung_object) as $p
      | ($p.minLength | length_of) as $minLength
      | ($p.maxLength | length_of) as $maxLength
      | ($p.minValue | bound_of($datentyp)) as $minValue
      | ($p.maxValue | bound_of($datentyp)) as $maxValue
      | ($p.pattern | txt) as $pattern
      # an empty pattern is no constraint and no note
      | (if $pattern == "" then null else $pattern | pattern_kind end) as $pattern_kind
      | (if $minLength == null then {} else {minLength: $minLength} end)
        + (if $maxLength == null then {} else {maxLength: $maxLength} end)
        + (if $minValue == null then {} else {minValue: $minValue} end)
        + (if $maxValue == null then {} else {maxValue: $maxValue} end)
        + (if $pattern_kind == "regex" then {pattern: $pattern} else {} end) as $validation
      # (when every key gave a constraint, the usual case, there is nothing to note)
      | (if ($validation | length) == ($p | length) then [] else
        [ $p | to_entries[] | .key as $k | .value as $v
          | if $k == "#unparsed" then
              ["praezisierung (not understood, kept as written): \($v)",
               warning("praezisierung-unparsed"; $element; "praezisierung \($v | tojson) is not a JSON object of constraints; kept as a note")]
            elif $k == "minLength" or $k == "maxLength" then
              if (if $k == "minLength" then $minLength else $maxLength end) != null then empty
              else ["\($k) (not a length, kept as written): \($v | tojson)",
                    warning("praezisierung-invalid-value"; $element; "\($k) \($v | tojson) is not a non-negative integer; kept as a note")]
              end
            elif $k == "minValue" or $k == "maxValue" then
              if (if $k == "minValue" then $minValue else $maxValue end) != null then empty
              else ["\($k) (not a number, kept as written): \($v | tojson)",
                    warning("praezisierung-invalid-value"; $element; "\($k) \($v | tojson) is not a number; kept as a note")]
              end
            elif $k == "pattern" then
              if $pattern_kind == null or $pattern_kind == "regex" then empty
              elif $pattern_kind == "prose" then
                ["pattern (prose, not a regular expression): \($pattern)",
                 warning("pattern-not-regex"; $element; "pattern \($pattern | tojson) is prose, not a regular expression; kept as a note")]
              else
                ["pattern (invalid regular expression): \($pattern)",
                 warning("pattern-invalid"; $element; "pattern \($pattern | tojson) is not a valid regular expression; kept as a note")]
              end
            else
              ["praezisierung \($k): \($v | tojson)",
               warning("praezisierung-unknown-key"; $element; "praezisierung key \($k | tojson) is not supported; kept as a note")]
            end ]
        end) as $problems
      | { validation: ($validation + (if $decimals == null then {} else {decimals: $decimals} end)),
          notes: [ $problems[][0] ],
          warnings: [ $problems[][1] ] }
    end;

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

# → {codelist, options, warnings, missing}. Only select fields resolve their options.
# A reference without any version (canonicalIdentification only) resolves to the newest version at
# hand (`codelist($uri; null)`), named in `codelist.resolvedVersion` and in a warning.
# A missing list gives a warning (policy "warn") or an entry in `missing` {urn, field}: the program
# collects them all and stops once at the end, naming each.
def select_options($element; $fimId; $type):
  # (most fields: no select, no reference)
  if $type != "select" and .codelisteReferenz == null then {codelist: null, options: null, warnings: [], missing: []} else
  (.codelisteReferenz | get("genericodeIdentification")) as $g
  | ($g | get("canonicalVersionUri") | opt) as $cvu
  | ($g | get("canonicalIdentification") | opt) as $cu
  | ($g | get("version") | opt) as $cv
  | (.codelisteReferenz | get("identifikation") | get("id") | opt) as $cid
  | (if $cvu == null and $cu == null then null
     else {id: $cid, canonicalUri: $cu, version: $cv, canonicalVersionUri: $cvu} end) as $ref
  # (the reference is kept as written; it is looked up as below)
  # A versionless reference as real exports write it: no version, and canonicalVersionUri `<canonical>_`.
  | (if $cv == null and $cu != null and $cvu == "\($cu)_" then null else $cvu end) as $cvu
  | if $type != "select" then
      {codelist: (if $ref == null then null else $ref + {resolved: false, resolvedVersion: null} end), options: null,
       warnings: [], missing: []}
    elif $ref == null then
      {codelist: null, options: [],
       warnings: [warning("select-without-options"; $element; "select field without a codelisteReferenz: it has no options")],
       missing: []}
    else
      # (no version at all: the newest version at hand)
      ($cvu == null and $cv == null) as $unversioned
      | (if $cvu != null then codelist($cvu) // (if $cu != null and $cv != null then codelist($cu; $cv) else null end)
         elif $cu != null then codelist($cu; $cv)
         else null end) as $list
      | ($cvu // (if $cv != null then "\($cu)_\($cv)" elif $unversioned then "\($cu), no version" else $cu end)) as $urn
      | if $list != null then
          ($list.version | opt) as $version
          | {codelist: ($ref + {resolved: true, resolvedVersion: $version}),
             options: [ $list.codes // [] | .[] | {code: (.code | txt), name: ((.name | opt) // (.code | txt)), help: null} ],
             warnings: (if $unversioned
                        then [warning("codelist-newest-version"; $element; "codelist \($cu) has no version in the form; used the newest at hand, \($version // "(no version)")")]
                        else [] end),
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

# ---------------------------------------------------------------- structure

# The uses listed by a node's struktur, in document order, each with its path segment: the FIM id,
# suffixed "~2", "~3" … when the same id occurs again among the same siblings. An enthaelt that holds
# neither a datenfeld nor a datenfeldgruppe yields a use of kind "empty" (reported, not an element).
def uses:
  [ .struktur // [] | as_array | .[] | select(type == "object")
    | .anzahl as $anzahl
    | .bezug as $bezug
    | def use($kind):
        (get("identifikation") | get("id") | txt) as $fimId
        | {kind: $kind, node: ., anzahl: $anzahl, bezug: $bezug, fimId: $fimId, segment: $fimId};
      [ .enthaelt | as_array | .[] | select(type == "object") ] as $enthaelt
    | [ ($enthaelt[] | .datenfeldgruppe | as_array | .[] | use("group")),
        ($enthaelt[] | .datenfeld | as_array | .[] | use("field")) ]
    | if length == 0 then {kind: "empty", anzahl: $anzahl} else .[] end ]
  # The segment is the id, unless an id is missing or occurs again among the siblings (rare):
  # then a use without an id is "unidentified-" and its position among all uses of the node,
  # and a repeated one gets its "~k".
  | [ .[] | select(.kind != "empty") | .fimId ] as $ids
  | if ($ids | unique | length) == ($ids | length) and all($ids[]; . != "") then .
    else
      reduce .[] as $use ({seen: {}, out: []};
        if $use.kind == "empty" then .out += [$use]
        else
          (if $use.fimId == "" then "unidentified-\(.out | length + 1)" else $use.fimId end) as $base
          | ((.seen[$base] // 0) + 1) as $k
          | .seen[$base] = $k
          | .out += [$use + {segment: (if $k == 1 then $base else "\($base)~\($k)" end)}]
        end)
      | .out
    end;

# The warnings for the "empty" uses in a list made by `uses`.
def empty_uses_warnings($element):
  [ .[] | select(.kind == "empty")
    | warning("empty-struktur"; $element; "a struktur (anzahl \(.anzahl | txt | tojson)) contains neither a datenfeld nor a datenfeldgruppe") ];

# ---------------------------------------------------------------- faithful detail (formatVersion 1.1)

# The bezug entries of a node as [{text, link}], in order. 2.0 has one bezug text per element: it is
# kept whole (line breaks and semicolons included); a blank one gives []. (`link` is 3.0.0's @link.)
def legal_references:
  [ .bezug // [] | as_array | .[] | {text: (. | txt), link: (. | get("@link") | opt)} | select(.text != "") ];

# A code element (status) → {code, list, listVersion}, or null without a code. listURI and
# listVersionID as written, else the values the 2.0 XSD fixes for xdatenfelder.status.
def status_of:
  (code) as $c
  | if $c == "" then null
    else {code: $c,
          list: ((get("@listURI") | opt) // "urn:xoev-de:fim:codeliste:xdatenfelder.status"),
          listVersion: ((get("@listVersionID") | opt) // "1.0")} end;

def join_path($prefix; $segment): if $prefix == "" then $segment else "\($prefix)/\($segment)" end;

def missing_id_warnings($use; $element):
  if $use.fimId == "" then [warning("missing-id"; $element; "the \($use.kind) has no identifikation/id; its element id is generated")] else [] end;

# What an element takes from its node alone: the element with the keys that depend on where it is
# used (id, useLegalReferences, min, max, required, repeatable, and a group's elements) still null,
# and a label that is null when it would be the id. A field also gives its warnings (elementId null)
# and its missing codelists; $fimId is what a missing codelist names (the FIM id, or the element id).
# (A function of the node, $fimId, the lookups, the codelists and $source: the engine's memo keeps
# it, so a Datenfeld or Datenfeldgruppe used many times in a run is read once.)
def node_element($kind; $fimId):
  . as $n
  | (get("identifikation") | get("id") | txt | if . == "" then null else . end) as $ownId
  | ($n.name | opt) as $name
  | if $kind == "group" then
      { element:
          { id: null, kind: "group",
            fimId: $ownId,
            fimVersion: ($n.identifikation | get("version") | opt),
            name: $name,
            label: (($n.bezeichnungEingabe | opt) // $name),
            help: ($n.hilfetextEingabe | opt),
            outputLabel: ($n.bezeichnungAusgabe | opt),
            outputHelp: ($n.hilfetextAusgabe | opt),
            description: ($n.beschreibung | opt),
            definition: ($n.definition | opt),
            status: ($n.status | status_of),
            legalReferences: ($n | legal_references),
            useLegalReferences: null,
            min: null, max: null, required: null, repeatable: null,
            choice: false,
            rules: ($n | rules_of),
            notes: [],
            elements: null },
        uses: ($n | uses) }
    else
      ($n.feldart | code) as $feldart
      | ($n.datentyp | code) as $datentyp
      | element_type($feldart; $datentyp) as $et
      | ($n.praezisierung | constraints(null; $datentyp; $et.type | lookup("decimals"))) as $c
      | ($n | select_options(null; $fimId; $et.type)) as $o
      | ($n.inhalt | opt) as $inhalt
      | { element:
            { id: null, kind: "field",
              fimId: $ownId,
              fimVersion: ($n.identifikation | get("version") | opt),
              name: $name,
              label: (($n.bezeichnungEingabe | opt) // $name),
              help: ($n.hilfetextEingabe | opt),
              outputLabel: ($n.bezeichnungAusgabe | opt),
              outputHelp: ($n.hilfetextAusgabe | opt),
              description: ($n.beschreibung | opt),
              definition: ($n.definition | opt),
              status: ($n.status | status_of),
              legalReferences: ($n | legal_references),
              useLegalReferences: null,
              type: $et.type,
              feldart: $feldart,
              datentyp: $datentyp,
              min: null, max: null, required: null, repeatable: null,
              readOnly: false,
              prefill: null,
              default: (if $et.type == "info" then null else $inhalt end),
              text: (if $et.type == "info" then $inhalt else null end),
              validation: $c.validation,
              options: $o.options,
              codelist: $o.codelist,
              rules: ($n | rules_of),
              notes: ((if $et.problem == null then [] else [$et.problem[1]] end) + $c.notes) },
          warnings: ((if $et.problem == null then [] else [warning($et.problem[0]; null; $et.problem[1])] end)
                     + $c.warnings + $o.warnings),
          missing: $o.missing }
    end;

# One use (from `uses`) → {element, warnings, fields, groups}: the element, the warnings of it and of
# everything in it (in document order, the element's own first), and how many field and group elements
# it is and holds. Group uses recurse into their own uses; the sums are made on the way up, so the
# document is never walked again.
def element($prefix):
  . as $use
  | join_path($prefix; $use.segment) as $id
  | ($use.anzahl | cardinality($id)) as $card
  | (if $use.fimId == "" then null else $use.fimId end) as $fimId
  | ($use.node | if type == "object" then . else {} end)
  | memo([$use.kind, $fimId // $id]; node_element($use.kind; $fimId // $id)) as $p
  # (`+` keeps the keys of the left object where they are: the order stays the documented one)
  | ($p.element
     + { id: $id, label: ($p.element.label // $id),
         useLegalReferences: ({bezug: $use.bezug} | legal_references),
         min: $card.min, max: $card.max, required: $card.required, repeatable: $card.repeatable }) as $element
  | if $use.kind == "group" then
      $p.uses as $uses
      | [ $uses[] | select(.kind != "empty") | element($id) ] as $children
      | { element: ($element + { elements: [ $children[].element ] }),
          warnings: (missing_id_warnings($use; $id) + $card.warnings + ($uses | empty_uses_warnings($id))
                     + [ $children[].warnings[] ]),
          missing: [ $children[].missing[] ],
          fields: sum($children[].fields),
          groups: (sum($children[].groups) + 1) }
    else
      { element: $element,
        warnings: (missing_id_warnings($use; $id) + $card.warnings + [ $p.warnings[] | .elementId = $id ]),
        missing: $p.missing,
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
# fixture runner do not check, so the program does (an XDatenfelder 3.0.0 file must not pass as this version).
def namespaces: [ to_entries[] | select(.key == "@xmlns" or (.key | startswith("@xmlns:"))) | .value ];

# The two messages this mapping takes: a Stammdatenschema (a whole form) or a single Datenfeldgruppe
# (a FIM building block), which becomes a form of one section, as in xdatenfelder3-to-form.
def message_types: ["xdatenfelder.stammdatenschema.0102", "xdatenfelder.datenfeldgruppe.0103"];

(if type == "object" then [ message_types[] as $t | select(has($t)) | $t ] | first // null else null end) as $type
| (if $type == null then error("not an \(message_types | join(" or ")) message") else . end)
| (.[$type]
   | if type != "object" then error("not an \($type) message")
     elif (namespaces | any(.[]; . == "urn:xoev-de:fim:standard:xdatenfelder_2") | not)
     then error("not an XDatenfelder message in namespace urn:xoev-de:fim:standard:xdatenfelder_2 (declared: \(namespaces | join(", ")))")
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
# (a section is its group element with kind "section" and generated: false, the keys in the same order;
# a key added to the group element in `element` must be added here too)
| [ $top_groups[] | .element
    | {id, kind: "section", generated: false, fimId, fimVersion, name, label, help,
       outputLabel, outputHelp, description, definition, status, legalReferences, useLegalReferences,
       min, max, required, repeatable, choice, rules, notes, elements} ] as $groups
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
| sum($general[], $top_groups[] | .fields) as $fields_out
| sum($general[], $top_groups[] | .groups) as $groups_out
| if $fields_out != $fields_in or $groups_out != $groups_in then
    error("\($fields_in) datenfeld and \($groups_in) datenfeldgruppe elements in the input, but \($fields_out) field and \($groups_out) group elements mapped: an element outside struktur/enthaelt?")
  else . end
# Every missing codelist at once (policy "quarantine"), each with the fields that need it.
| [ $general[], $top_groups[] | .missing[] ] as $missing
| if ($missing | length) > 0 then error($missing | missing_codelists_message) else . end
| { formatVersion: "1.1",
    id: ($root.identifikation | get("id") | txt),
    version: ($root.identifikation | get("version") | opt),
    title: (($root.bezeichnungEingabe | opt) // ($root.name | opt) // ($root.identifikation | get("id") | txt)),
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
      standardVersion: "2.0",
      messageId: ($message.header | get("nachrichtID") | opt),
      createdAt: ($message.header | get("erstellungszeitpunkt") | opt),
      status: ($root.status | code | if . == "" then null else . end),
      freigabestatus: null,
      dokumentsteckbrief: null,
      publishedAt: ($root.veroeffentlichungsdatum | opt),
      lastChangedAt: null,
      legalReferences: $refs,
      leikaKeys: ($refs | leika_keys) }
      # Only a group message says what it is; a document without messageType is a Stammdatenschema.
      + (if $is_group then {messageType: $type} else {} end)),
    warnings: ((if $fields_in == 0 then [warning("schema-empty"; null; if $is_group then "the datenfeldgruppe contains no datenfeld" else "the schema contains no datenfeld" end)] else [] end)
               + ($top | empty_uses_warnings(null))
               + $element_warnings) }
# The same warnings once more for the bridge's migration log (the engine takes "#warnings" out of the
# document and logs each entry as a warning event of the item; the document itself is unchanged).
| . + {"#warnings": [ .warnings[] | "\(.code)\(if .elementId == null then "" else " (\(.elementId))" end): \(.message)" ]}
