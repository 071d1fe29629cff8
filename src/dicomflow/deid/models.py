"""De-identification keeps no rows of its own in the database.

Secrets (project keys) and the reverse map (pseudonym → identity, new UID → original) stay in the
file key store (``$DICOMFLOW_HOME/keys/projects/``, mode 600), outside database dumps; the per-job
de-identification record (tag, action, option — never values) is kept on the staging job; every
re-identification and download of identifying data is in the one audit log (``accounts.AuditEntry``).
"""
