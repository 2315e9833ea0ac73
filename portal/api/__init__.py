"""The web layer's API: DRF plumbing (errors, inputs, JSON, paging, the tenant-scoped viewset,
token auth and role permissions) and one module of routes per domain app."""
