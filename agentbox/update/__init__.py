"""Release bundles and updates: verify a signed bundle, install it beside the current release,
switch, watch a probation window and roll back by itself (README: Updates, docs/updates.md)."""
