"""Where a delivery goes, by destination type: one module per type, listed in
``registry``; adding a type (DICOMweb STOW-RS) is one module and one registry line."""
