.["xdatenfelder.stammdatenschema.0102"].stammdatenschema
| {"xdf:xdatenfelder.stammdatenschema.0102": {"@xmlns:xdf": "urn:xoev-de:fim:standard:xdatenfelder_3.0.0", "xdf:id": .identifikation.id}}
