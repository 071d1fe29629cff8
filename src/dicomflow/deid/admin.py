"""De-identification has no admin pages: re-identifications are read in the audit log (accounts)."""
