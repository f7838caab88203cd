//! FIM mappings on the real and handmade samples of ../shared/fim (written by the FIM test session).
