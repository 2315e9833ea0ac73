"""The bottom layer: what every app may import, and which imports no app, Django's ORM or DRF."""
