"""Periodic jobs, run by `manage.py rqcron vmportal.cron` (see the Makefile and README)."""

from django.conf import settings
from rq import cron

from inventory.jobs import sync_all_hosts

cron.register(sync_all_hosts, "sync", interval=settings.SYNC_INTERVAL, job_timeout=120)

from migrations_app.jobs import reconcile_runs  # noqa: E402  (kept beside its registration)

cron.register(reconcile_runs, "default", interval=60, job_timeout=300)

from migrations_app.jobs import prune_backups  # noqa: E402  (kept beside its registration)

cron.register(prune_backups, "default", interval=3600, job_timeout=600)

from migrations_app.plan_jobs import sweep_plans  # noqa: E402  (kept beside its registration)

cron.register(sweep_plans, "default", interval=60, job_timeout=900)
