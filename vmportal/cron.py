"""Periodic jobs, run by `manage.py rqcron vmportal.cron` (see the Makefile and README)."""

from django.conf import settings
from rq import cron

from inventory.jobs import sync_all_hosts

cron.register(sync_all_hosts, "sync", interval=settings.SYNC_INTERVAL, job_timeout=120)
