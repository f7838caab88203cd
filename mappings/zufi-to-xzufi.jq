# zufi-to-xzufi: one NRW ZuFi record {leistung, organisationseinheit[]} → one XZuFi 2.2 profile
# message (portal-xml import) with `schreibe` blocks for the leistung, its onlinedienst, the model
# region's organisationseinheiten and one zustaendigkeitTransferObjekt per adopting municipality.
# The profile (structure, sources of every value, id scheme) is documented in docs/xzufi-profile.md;
# schemas/xzufi-import-profile.xsd validates the result. Output is a pure function of the record,
# $source, $item (incl. $item.adoptions) and the lookup tables: no clock, no random ids.

# ---- constants of the profile (see docs/xzufi-profile.md §3 and §4) ----------------------------
def xzufi_ns: "http://xoev.de/schemata/xzufi/2_2_0";
# Identifiers the bridge issues: agency + scheme per object class; the value is derived from $item.key.
def bridge_agency: "urn:de:nrw:kommunalportal:portal-bridge";
def bridge_scheme($class): "urn:de:nrw:kommunalportal:portal-bridge:id:" + $class;
# Secondary id of the onlinedienst: the FIM Stammdatenschema "<S-id>@<version>" of its form (formularId).
def formular_scheme: "urn:de:nrw:kommunalportal:portal-bridge:id:fim-stammdatenschema";
# Identifiers of the ZuFi organisationseinheiten keep their ZuFi `identifikator`, scoped by `mandant`.
def zufi_oe_scheme: "urn:de:nrw:zufi:organisationseinheit:identifikator";
def rs_urn_prefix: "urn:de:bund:destatis:bevoelkerungsstatistik:schluessel:rs:";
# Code lists (URNs as far as known; docs/xzufi-profile.md).
def textmodul_list: {"@listURI": "urn:de:xzufi:codeliste:leistungstextmodulleika", "@listVersionID": "20240216"};
def linktyp_list: {"@listURI": "urn:xoev-de:fim:codeliste:onlinedienstlinktyp"};
def typisierung_list: {"@listURI": "urn:de:fim:leika:typisierung"};
def linktyp_onlinedienst: "01";
# rolle of a zustaendigkeit created from an adoption ("01": as used for zustaendigkeit/rolle in the
# FIT-Connect XZuFi docs; list URN not verified, so no listURI is written).
def rolle_adoption: "01";

# LeiKa text modules: [code, ZuFi field]. 07 also carries rechtsgrundlageLinks ($rechtsgrundlage_links).
def textmodule: [
  ["02", "bezeichnung"], ["03", "bezeichnung2"], ["05", "kurztext"], ["06", "volltext"],
  ["07", "rechtsgrundlage"], ["08", "erforderliche_unterlagen"], ["09", "voraussetzungen"],
  ["11", "verfahrensablauf"], ["14", "formulare"], ["15", "weiterfuehrende_informationen"],
  ["16", "hinweise"], ["23", "ansprechpunkt"], ["24", "teaser"]
];

# ---- helpers -----------------------------------------------------------------------------------
# A text value or null: null, "", whitespace-only strings and non-scalars count as missing;
# numbers and booleans become strings. Every optional value goes through this, so that a missing
# value writes no element instead of making a whole object vanish (jq `empty` pitfall).
def nonblank:
  if type == "string" then (if test("\\S") then . else null end)
  elif type == "number" or type == "boolean" then tostring
  else null end;
# Text in German: {"@languageCode": "de", "#text": …} or null.
def de: if . == null then null else {"@languageCode": "de", "#text": .} end;
# null for an empty array, so that no element is written.
def nonempty_array: if length == 0 then null else . end;
# ISO date (YYYY-MM-DD) from ISO dates, ISO date-times and German dates (DD.MM.YYYY); anything else
# stays as it is and is rejected by the XSD (the record is quarantined, not silently changed).
def isodate:
  if . == null then null
  elif test("^\\d{4}-\\d{2}-\\d{2}") then .[0:10]
  elif test("^\\d{2}\\.\\d{2}\\.\\d{4}$") then (split(".") | "\(.[2])-\(.[1])-\(.[0])")
  else . end;
# An identifier issued by the bridge.
def bridge_id($class; $value):
  {"@schemeAgencyID": bridge_agency, "@schemeID": bridge_scheme($class), "#text": $value};

# Name-based UUID (RFC 9562 version 8, "custom") from a string: the first 128 bits of the engine's
# native `sha256` of its UTF-8 bytes, with the version nibble set to 8 and the variant bits to 10.
def uuid_v8:
  sha256 as $x
  | ("0123456789abcdef" | index($x[16:17])) as $d
  | ("89ab"[($d % 4):($d % 4) + 1]) as $variant
  | "\($x[0:8])-\($x[8:12])-8\($x[13:16])-\($variant)\($x[17:20])-\($x[20:32])";

# ---- the record --------------------------------------------------------------------------------
(.leistung // error("the record has no `leistung` object")) as $l
| ($l.schluessel | nonblank // error("leistung.schluessel (LeiKa key) is missing or empty")) as $leika
| ($l.bezeichnung | nonblank // error("leistung.bezeichnung (Leistungsbezeichnung) is missing or empty")) as $name
# Object ids: the item key ("<source id>/<external id>", external id = LeiKa key in the shipped
# source configs) identifies the record in the bridge, so it also identifies the leistung.
| ($item.key // "\($source.id)/\($leika)") as $key
| ($key + "/onlinedienst") as $onlinedienst_id

# ---- leistung ----------------------------------------------------------------------------------
| ([ $l.rechtsgrundlageLinks | as_array[]
     | if type == "string" then {uri: .} elif type == "object" then . else {} end
     | {uri: (.uri | nonblank), titel: (.titel | nonblank)}
     | select(.uri != null or .titel != null)
     # an entry with a title but no uri writes an empty <uri/>, which the XSD rejects: quarantined, not dropped
     | {"xzufi:uri": (.uri // ""), "xzufi:titel": .titel} ]) as $rechtsgrundlage_links
| [ textmodule[] as [$code, $field]
    | ($l[$field] | nonblank) as $text
    | (if $code == "07" then $rechtsgrundlage_links else [] end) as $links
    | if $text == null and ($links | length) == 0 then empty else
        { "xzufi:leikaTextmodul": (textmodul_list + {code: $code}),
          "xzufi:inhalt": ($text | de),
          "xzufi:weiterfuehrenderLink": ($links | nonempty_array) }
      end ] as $module_text
| ($l.fristen | nonblank) as $fristen
| ($l.kosten | nonblank) as $kosten
| ($l.bearbeitungsdauer | nonblank) as $bearbeitungsdauer
| [ $l.synonyme | as_array[] | nonblank | select(. != null) ] as $synonyme
| ($l.fachlich_freigegeben_am | nonblank | isodate) as $freigegeben_am
| ($l.fachlich_freigegeben_durch | nonblank) as $freigegeben_durch
| ($l.urlOnlineDienst | nonblank) as $url_onlinedienst
| [ $l.typisierung | as_array[] | nonblank | select(. != null) ] as $typisierung
| { "xzufi:id": bridge_id("leistung"; $key),
    "xzufi:referenzLeiKa": {code: $leika},
    "xzufi:modulText": $module_text,
    "xzufi:modulFrist": (if $fristen then {"xzufi:beschreibung": ($fristen | de)} else null end),
    "xzufi:modulKosten": (if $kosten then {"xzufi:beschreibung": ($kosten | de)} else null end),
    "xzufi:modulBearbeitungsdauer":
      (if $bearbeitungsdauer then {"xzufi:beschreibung": ($bearbeitungsdauer | de)} else null end),
    "xzufi:modulBegriffImKontext":
      (if ($synonyme | length) > 0
       then {"xzufi:begriffImKontext": [ $synonyme[] | {"xzufi:begriff": de} ]}
       else null end),
    "xzufi:modulFachlicheFreigabe":
      (if $freigegeben_am == null and $freigegeben_durch == null then null
       else { "xzufi:fachlichFreigegebenAm": $freigegeben_am,
              "xzufi:fachlichFreigegebenDurch": ($freigegeben_durch | de) } end),
    # the model region's own page of the service (urlOnlineDienst), kept as its origin portal
    "xzufi:modulUrsprungsportal":
      (if $url_onlinedienst then {"xzufi:uri": $url_onlinedienst} else null end),
    "xzufi:typisierung": ([ $typisierung[] | typisierung_list + {code: .} ] | nonempty_array) } as $leistung

# ---- onlinedienst ------------------------------------------------------------------------------
| ($l.formularId | nonblank) as $form
| ($source.params.form_url_template | nonblank) as $template
| (if $template != null and $form != null then
     (if ($template | contains("{form}")) then ($template | split("{form}") | join($form))
      else error("source parameter form_url_template has no {form} placeholder: \($template)") end)
   else $url_onlinedienst end) as $link
| ($l.vertrauensniveau | nonblank) as $vertrauensniveau
| (if $vertrauensniveau == null then null else
     ($vertrauensniveau | ascii_downcase | lookup("vertrauensniveau")) as $row
     | if $row == null then
         error("unknown vertrauensniveau \"\($vertrauensniveau)\" (known: basisregistrierung, substanziell, hoch; see [lookups.vertrauensniveau])")
       else {"@listURI": $row.listURI, "@listVersionID": $row.listVersionID, code: $row.code} end
   end) as $vertrauensniveau_code
| { "xzufi:id": bridge_id("onlinedienst"; $onlinedienst_id),
    "xzufi:idSekundaer": (if $form then {"@schemeID": formular_scheme, "#text": $form} else null end),
    "xzufi:bezeichnung": (($l.bezeichnung2 | nonblank) // $name | de),
    "xzufi:link":
      (if $link then {"xzufi:typ": (linktyp_list + {code: linktyp_onlinedienst}), "xzufi:link": $link}
       else null end),
    "xzufi:vertrauensniveau": $vertrauensniveau_code } as $onlinedienst

# ---- organisationseinheiten of the model region ------------------------------------------------
| [ .organisationseinheit | as_array | to_entries[]
    | .key as $i | .value
    | if type != "object" then error("organisationseinheit[\($i)] is not an object") else . end
    | {
        "xzufi:id": {
          "@schemeAgencyID": (.mandant | nonblank),
          "@schemeID": zufi_oe_scheme,
          "#text": (.identifikator | nonblank
                    // error("organisationseinheit[\($i)] has no identifikator")) },
        "xzufi:name": {"xzufi:name": (.name | nonblank | de)},
        "xzufi:beschreibung": (.beschreibung | nonblank | de),
        "xzufi:anschrift": ([ .anschrift | as_array[]
          | if type == "object" then . else error("organisationseinheit[\($i)].anschrift has an entry that is not an object") end
          | { "xzufi:typ": (.typ | nonblank | if . then {code: .} else null end),
              "xzufi:strasse": (.strasse | nonblank),
              "xzufi:hausnummer": (.hausnummer | nonblank),
              "xzufi:postfach": (.postfach | nonblank),
              "xzufi:postleitzahl": (.postleitzahl | nonblank),
              "xzufi:ort": (.ort | nonblank),
              "xzufi:zusatz": (.zusatz | nonblank),
              "xzufi:anfahrturl": (.anfahrturl | nonblank) }
          | select([.[] | select(. != null)] | length > 0) ] | nonempty_array),
        "xzufi:kommunikation": ([ .kommunikation | as_array[]
          | if type == "object" then . else error("organisationseinheit[\($i)].kommunikation has an entry that is not an object") end
          | { "xzufi:kanal": (.kanal | nonblank | if . then {code: .} else null end),
              "xzufi:kennung": (.kennung | nonblank),
              "xzufi:kennungZusatz": (.kennungzusatz | nonblank),
              "xzufi:zusatz": (.zusatz | nonblank) }
          | select([.[] | select(. != null)] | length > 0) ] | nonempty_array) }
  ] as $organisationseinheiten

# ---- zustaendigkeiten: one per adopting municipality, sorted and de-duplicated by ARS ----------
| [ ($item.adoptions // []) | as_array[] | select(type == "object")
    | {ars: (.ars | nonblank // "")} ] | unique_by(.ars)
| map({
    "xzufi:uebergeordnetesObjektID": bridge_id("onlinedienst"; $onlinedienst_id),
    "xzufi:zustaendigkeit": {
      "xzufi:id": bridge_id("zustaendigkeit"; "\($key)/zustaendigkeit/\(.ars)"),
      "xzufi:leistungID": bridge_id("leistung"; $key),
      # a malformed ARS writes a malformed URN, which the XSD rejects (quarantine)
      "xzufi:gebietID": (rs_urn_prefix + .ars),
      "xzufi:rolle": {code: rolle_adoption} } }) as $zustaendigkeiten

# ---- the message -------------------------------------------------------------------------------
| ( [ {"xzufi:leistung": $leistung}, {"xzufi:onlinedienst": $onlinedienst} ]
    + [ $organisationseinheiten[] | {"xzufi:organisationseinheit": .} ]
    + [ $zustaendigkeiten[] | {"xzufi:zustaendigkeitTransferObjekt": .} ] ) as $schreibe
# erstelltDatumZeit: the approval date-time of the record if it has one, else its date at 00:00 (no
# time zone: a local date); never the clock
| ($l.fachlich_freigegeben_am | nonblank) as $freigegeben_raw
| (if $freigegeben_raw and ($freigegeben_raw | test("^\\d{4}-\\d{2}-\\d{2}T")) then $freigegeben_raw
   elif $freigegeben_am and ($freigegeben_am | test("^\\d{4}-\\d{2}-\\d{2}$")) then $freigegeben_am + "T00:00:00"
   else $freigegeben_am end) as $erstellt
| "portal-bridge/\($source.id)" as $sender
| { "xzufi:transfer.operation.040101": {
      "@xmlns:xzufi": xzufi_ns,
      "@xzufiVersion": "2.2.0",
      "@produktbezeichnung": "portal-bridge",
      "xzufi:nachrichtenkopf": {
        # the same content gives the same message id; any change of the delivered content a new one
        "xzufi:nachrichtUUID": ({sender: $sender, erstellt: $erstellt, schreibe: $schreibe} | tojson | uuid_v8),
        "xzufi:erstelltDatumZeit": $erstellt,
        "xzufi:sender": $sender,
        "xzufi:empfaenger": "Kommunalportal.NRW" },
      "xzufi:schreibe": $schreibe } }
