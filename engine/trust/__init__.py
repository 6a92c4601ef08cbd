"""Who may do what and what happened: the authorization policy and its loaders, user accounts, masking of
personal data, the tamper-evident audit trail and its anchors, retention, backup and restore."""
