"""Benchmarks (issue 7): `make bench`, or `python -m bench [AREA ...] [--quick]`.

Every figure is printed next to a baseline measured in the same run, because the machine is
shared and noisy: compare ratios within a run, not raw figures across runs. A run creates its
own PostgreSQL database and Redis key prefix, starts its own gunicorn and Celery processes, and
removes all of them at the end, failed or not. See docs/performance.md for the figures.
"""
