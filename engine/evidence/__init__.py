"""Evidence: artefact upload and verification against the object store, integrity checks, and the sign-off sheets
ItemGate prints and checks."""
