"""vmportal settings — every value comes from the environment (see `.env.example`).

`VMPORTAL_DEBUG=1` is the development mode used by `make run`; without it the production hardening
below applies and `manage.py check --deploy` is clean.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from vmportal.env import env_bool, env_choice, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("VMPORTAL_DEBUG", False)
TESTING = env_bool("VMPORTAL_TESTING", False)

SECRET_KEY = env_str("VMPORTAL_SECRET_KEY", required=not (DEBUG or TESTING))
if not SECRET_KEY:
    # Development and tests only: a fixed key is fine there, never in production (required above).
    SECRET_KEY = "vmportal-insecure-development-key-do-not-use-in-production"  # noqa: S105
elif not (DEBUG or TESTING) and len(SECRET_KEY) < 50:
    raise ImproperlyConfigured("VMPORTAL_SECRET_KEY must be at least 50 characters long in production.")

ALLOWED_HOSTS = env_list("VMPORTAL_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG or TESTING else [])
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured("VMPORTAL_ALLOWED_HOSTS must list the host names the portal is served under.")
CSRF_TRUSTED_ORIGINS = env_list("VMPORTAL_CSRF_TRUSTED_ORIGINS", [])
for _origin in CSRF_TRUSTED_ORIGINS:
    if not _origin.startswith(("http://", "https://")):
        raise ImproperlyConfigured(
            f"VMPORTAL_CSRF_TRUSTED_ORIGINS entry {_origin!r} must start with http:// or https://."
        )

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "django_rq",
    "inventory",
    "migrations_app",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "vmportal.urls"
ASGI_APPLICATION = "vmportal.asgi.application"
WSGI_APPLICATION = "vmportal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "inventory.context_processors.roles",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------------
DATABASE_URL = env_str("VMPORTAL_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/vmportal")
try:
    _db = dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("VMPORTAL_DB_CONN_MAX_AGE", 60, minimum=0))
except ValueError as exc:
    raise ImproperlyConfigured(f"VMPORTAL_DATABASE_URL is malformed: {exc}") from exc
if _db.get("ENGINE") != "django.db.backends.postgresql":
    raise ImproperlyConfigured("VMPORTAL_DATABASE_URL must be a postgres:// URL; vmportal runs on PostgreSQL.")
_db["CONN_HEALTH_CHECKS"] = True
_db.setdefault("TEST", {})["NAME"] = env_str("VMPORTAL_TEST_DATABASE_NAME", "test_vmportal")
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: job queue and channel layer ---------------------------------------------------------
REDIS_URL = env_str("VMPORTAL_REDIS_URL", "redis://127.0.0.1:6379/0")
if not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured("VMPORTAL_REDIS_URL must start with redis://, rediss:// or unix://.")

# Sync is idempotent and may be retried; a migration never is (its jobs set their own timeouts).
RQ_DEFAULT_TIMEOUT = env_int("VMPORTAL_RQ_DEFAULT_TIMEOUT", 600, minimum=30)
RQ_QUEUES = {
    "default": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": RQ_DEFAULT_TIMEOUT},
    "sync": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": RQ_DEFAULT_TIMEOUT},
    # Moves have a queue of their own so a long move never delays audits and syncs.
    "migrations": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": RQ_DEFAULT_TIMEOUT},
}
RQ_SHOW_ADMIN_LINK = True
# Services enqueue with transaction.on_commit themselves, so a job id is known at once.
# Workers reconcile runs whose lease expired when they start (migrations_app.worker).
RQ = {"COMMIT_MODE": "auto", "WORKER_CLASS": "migrations_app.worker.ReconcilingWorker"}

# Redis pub/sub: a message to a group crosses Redis once per web process, which hands it to each of its
# websockets in memory (the list-based layer pops every message once per websocket, which is too slow
# for hundreds of watchers of one run). Delivery is at most once; a browser that reconnects gets a
# fresh snapshot from the database, so it still misses nothing.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "prefix": env_str("VMPORTAL_CHANNEL_PREFIX", "vmportal")},
    }
}
# The fleet dashboard re-reads host capacity and reachability this often (and whenever a run ends).
FLEET_REFRESH_SECONDS = env_int("VMPORTAL_FLEET_REFRESH_SECONDS", 30, minimum=5)

# --- Auth and security ------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "inventory:dashboard"
LOGOUT_REDIRECT_URL = "login"

SECURE = not (DEBUG or TESTING)
SESSION_COOKIE_SECURE = env_bool("VMPORTAL_SECURE_COOKIES", SECURE)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = env_int("VMPORTAL_SESSION_AGE", 8 * 3600, minimum=300)
SECURE_SSL_REDIRECT = env_bool("VMPORTAL_SSL_REDIRECT", SECURE)
SECURE_HSTS_SECONDS = env_int("VMPORTAL_HSTS_SECONDS", 31536000 if SECURE else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = env_bool("VMPORTAL_HSTS_PRELOAD", SECURE)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
CSRF_FAILURE_VIEW = "vmportal.views.csrf_failure"
if env_bool("VMPORTAL_BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Internationalisation -----------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("VMPORTAL_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# --- Static files (the project's own; third-party assets are installed from registries) --------
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("VMPORTAL_STATIC_ROOT", str(BASE_DIR / "var" / "static")))
# tests and development serve the project's static files straight from the finders (no collectstatic)
WHITENOISE_USE_FINDERS = DEBUG or TESTING
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if SECURE
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- Hypervisors -----------------------------------------------------------------------------------
# Directories from which a libvirt URI may name a UNIX socket (socket=) or SSH/TLS key material
# (keyfile=, pkipath=). Anything outside is refused at registration: a URI must not be a way to make
# the portal read arbitrary files.
LIBVIRT_SOCKET_DIRS = env_list(
    "VMPORTAL_LIBVIRT_SOCKET_DIRS", ["/run/libvirt", "/var/run/libvirt", "/var/lib/vmportal-lab"]
)
LIBVIRT_KEY_DIRS = env_list("VMPORTAL_LIBVIRT_KEY_DIRS", ["/etc/vmportal/keys", "/etc/pki/libvirt"])
LIBVIRT_TEST_DRIVER = env_bool("VMPORTAL_ALLOW_TEST_DRIVER", DEBUG or TESTING)
# Node files of the test driver (test:///path/node.xml) are read by libvirt, so they too are confined.
LIBVIRT_TEST_DIRS = env_list("VMPORTAL_LIBVIRT_TEST_DIRS", [str(BASE_DIR / "var" / "testdriver")])
LIBVIRT_CONNECT_TIMEOUT = env_int("VMPORTAL_LIBVIRT_CONNECT_TIMEOUT", 15, minimum=1, maximum=600)
SYNC_INTERVAL = env_int("VMPORTAL_SYNC_INTERVAL", 300, minimum=30)
# The audit re-syncs a host whose inventory is older than this (PROC-FRESH).
INVENTORY_MAX_AGE = env_int("VMPORTAL_INVENTORY_MAX_AGE", 600, minimum=30)
# Change freezes (PROC-WINDOW blocks plans in them): "START/END" ISO 8601 pairs, comma-separated.
CHANGE_FREEZES: list[tuple[datetime, datetime]] = []
for _freeze in env_list("VMPORTAL_CHANGE_FREEZES", []):
    try:
        _start, _end = (datetime.fromisoformat(p.strip()) for p in _freeze.split("/", 1))
    except ValueError:
        raise ImproperlyConfigured(f"VMPORTAL_CHANGE_FREEZES: {_freeze!r} is not START/END in ISO 8601.") from None
    if _start.tzinfo is None or _end.tzinfo is None or _end <= _start:
        raise ImproperlyConfigured(f"VMPORTAL_CHANGE_FREEZES: {_freeze!r} needs time zones and an end after its start.")
    CHANGE_FREEZES.append((_start, _end))
# --- Migration runs and backups ----------------------------------------------------------------------
# How long a run stays owned by its worker without a heartbeat (renewed about twice a second).
RUN_LEASE_SECONDS = env_int("VMPORTAL_RUN_LEASE_SECONDS", 30, minimum=3)
# The longest a move may take before the engine aborts it (the source keeps the VM).
MAX_MOVE_SECONDS = env_int("VMPORTAL_MAX_MOVE_SECONDS", 6 * 3600, minimum=60)
# Chunk size of the portal's own disk copies (cold moves, backups); a fault re-sends at most one chunk.
COLD_CHUNK_BYTES = env_int("VMPORTAL_COLD_CHUNK_BYTES", 32 * 1024 * 1024, minimum=1024 * 1024)
# Backups: kept this many days; BAK-RECENT accepts one younger than BACKUP_MAX_AGE seconds.
BACKUP_RETENTION_DAYS = env_int("VMPORTAL_BACKUP_RETENTION_DAYS", 14, minimum=1)
BACKUP_MAX_AGE = env_int("VMPORTAL_BACKUP_MAX_AGE", 24 * 3600, minimum=60)
# Empty: each disk's backup beside the disk, in the disk's own pool; else a dedicated directory pool.
BACKUP_POOL = env_str("VMPORTAL_BACKUP_POOL", "")
BACKUP_POOL_PATH = env_str("VMPORTAL_BACKUP_POOL_PATH", "/var/lib/libvirt/vmportal-backups")
LAB_STATE_FILE = Path(env_str("VMPORTAL_LAB_STATE", "/var/lib/vmportal-lab/lab.json"))

LOG_LEVEL = env_choice("VMPORTAL_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
