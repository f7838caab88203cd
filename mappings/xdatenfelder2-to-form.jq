.["xdatenfelder.stammdatenschema.0102"].stammdatenschema
| { formatVersion: "0.1", id: .identifikation.id, version: (.identifikation.version // null), title: .name, source: $source.id }
