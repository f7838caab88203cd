{"xzufi:schreibe": {"@xmlns:xzufi": "http://xoev.de/schemata/xzufi/2_2_0", "xzufi:id": .leistung.schluessel}}
