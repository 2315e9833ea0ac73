"""The compute app's API routes, one module per job."""
