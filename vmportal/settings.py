"""vmportal settings — every value comes from the environment (see `.env.example`).

`VMPORTAL_DEBUG=1` is the development mode used by `make run`; without it the production hardening
below applies and `manage.py check --deploy` is clean.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from vmportal.env import env_bool, env_choice, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "[::1]", "::1", "testserver"}

DEBUG = env_bool("VMPORTAL_DEBUG", False)
TESTING = env_bool("VMPORTAL_TESTING", False)
if TESTING:
    # Test mode drops secure cookies, HSTS and the HTTPS redirect and accepts a built-in key: it must
    # never be switched on by mistake in a deployment. A production setting beside it stops start-up.
    _production = [
        name
        for name in ("VMPORTAL_SECRET_KEY", "VMPORTAL_SECRET_KEY_FILE", "VMPORTAL_CSRF_TRUSTED_ORIGINS")
        if os.environ.get(name, "").strip()
    ]
    if env_bool("VMPORTAL_BEHIND_TLS_PROXY", False):
        _production.append("VMPORTAL_BEHIND_TLS_PROXY")
    if any(h not in _LOCAL_HOSTS for h in env_list("VMPORTAL_ALLOWED_HOSTS", [])):
        _production.append("VMPORTAL_ALLOWED_HOSTS")
    if _production:
        raise ImproperlyConfigured(
            "VMPORTAL_TESTING=1 is for the test suite and benchmarks only, and this looks like a deployment "
            f"({', '.join(_production)} set). Unset VMPORTAL_TESTING: in test mode the portal would use a "
            "built-in secret key and drop secure cookies, HSTS and the HTTPS redirect."
        )

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
    "django_ratelimit",
    "csp",
    "axes",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "api",
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
    "csp.middleware.CSPMiddleware",
    # the request's source address for audit-log rows written by the services it calls
    "vmportal.middleware.AuditContextMiddleware",
    # last, as django-axes requires: turns a locked-out login into its lock-out page
    "axes.middleware.AxesMiddleware",
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
                "migrations_app.context_processors.notifications",
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
# the test database follows the configured one, so checkouts with their own database never share one
_db.setdefault("TEST", {})["NAME"] = env_str("VMPORTAL_TEST_DATABASE_NAME", f"test_{_db.get('NAME') or 'vmportal'}")
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
    # Audits have their own queue and worker: a 500-VM audit never holds up inventory syncs.
    "audits": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": RQ_DEFAULT_TIMEOUT},
    # Moves have a queue of their own so a long move never delays audits and syncs.
    "migrations": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": RQ_DEFAULT_TIMEOUT},
}
# django-rq's own admin registration would open the queue pages to every staff member (auditors too);
# they are mounted at /admin/rq/ for approvers/admins only instead (vmportal/urls.py).
RQ_SHOW_ADMIN_LINK = False
# Services enqueue with transaction.on_commit themselves, so a job id is known at once.
# Workers reconcile runs whose lease expired when they start (migrations_app.worker).
RQ = {"COMMIT_MODE": "auto", "WORKER_CLASS": "migrations_app.worker.ReconcilingWorker"}

CHANNEL_PREFIX = env_str("VMPORTAL_CHANNEL_PREFIX", "vmportal")
# Redis pub/sub: a message to a group crosses Redis once per web process, which hands it to each of its
# websockets in memory (the list-based layer pops every message once per websocket, which is too slow
# for hundreds of watchers of one run). Delivery is at most once; a browser that reconnects gets a
# fresh snapshot from the database, so it still misses nothing.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "prefix": CHANNEL_PREFIX},
    }
}
# A cache shared by every web process: rate limits count across all of them.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": f"{CHANNEL_PREFIX}:cache",
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
if TESTING:
    # Test accounts are made for nearly every test, and by the server processes browser tests start; a
    # deliberately slow hash would dominate the run. Test mode refuses production settings, see above.
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Login rate limit (django-axes): after this many failed logins for one user name from one address the
# pair is locked out for the cool-off time; every lock-out is written to the audit log.
AUTHENTICATION_BACKENDS = [
    "vmportal.auth.LoginRateLimitBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("VMPORTAL_LOGIN_FAILURE_LIMIT", 5, minimum=1, maximum=100)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("VMPORTAL_LOGIN_LOCKOUT_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False
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
# Content-Security-Policy: the portal's own files only, no inline script, no framing, no plug-ins.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}
# Per-user limits on what is expensive or reaches hosts: "COUNT/PERIOD" with s, m, h or d.
_RATE_RE = re.compile(r"^[1-9][0-9]*/[1-9]?[0-9]*[smhd]$")
RATE_LIMITS: dict[str, str] = {}
for _group, _var, _default in (
    ("plan-create", "VMPORTAL_RATE_PLAN_CREATE", "30/h"),
    ("plan-audit", "VMPORTAL_RATE_PLAN_AUDIT", "60/h"),
    ("host-test", "VMPORTAL_RATE_HOST_TEST", "10/m"),
):
    RATE_LIMITS[_group] = env_str(_var, _default).strip()
    if not _RATE_RE.match(RATE_LIMITS[_group]):
        raise ImproperlyConfigured(f"{_var}={RATE_LIMITS[_group]!r} is not COUNT/PERIOD, e.g. 30/h or 10/5m.")
RATELIMIT_ENABLE = True
# Django's own Redis cache backend increments atomically; django-ratelimit only lists django-redis's.
SILENCED_SYSTEM_CHECKS = ["django_ratelimit.W001"]
CSRF_FAILURE_VIEW = "vmportal.views.csrf_failure"
if env_bool("VMPORTAL_BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    # the client address (login rate limit, audit log) is the one the proxy saw
    AXES_IPWARE_PROXY_COUNT = 1
    AXES_IPWARE_META_PRECEDENCE_ORDER = ["HTTP_X_FORWARDED_FOR", "REMOTE_ADDR"]

# --- Mail (notifications) -------------------------------------------------------------------------
EMAIL_BACKEND = env_str(
    "VMPORTAL_EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend" if DEBUG else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = env_str("VMPORTAL_EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("VMPORTAL_EMAIL_PORT", 25, minimum=1, maximum=65535)
EMAIL_HOST_USER = env_str("VMPORTAL_EMAIL_USER", "")
EMAIL_HOST_PASSWORD = env_str("VMPORTAL_EMAIL_PASSWORD", "")
EMAIL_USE_TLS = env_bool("VMPORTAL_EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = env_str("VMPORTAL_EMAIL_FROM", "vmportal <vmportal@localhost>")
# Links in mails point here (the address people open the portal at).
PORTAL_URL = env_str("VMPORTAL_URL", "http://127.0.0.1:8000").rstrip("/")
if not PORTAL_URL.startswith(("http://", "https://")):
    raise ImproperlyConfigured("VMPORTAL_URL must start with http:// or https://.")

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
LAB_STATE_FILE = Path(env_str("VMPORTAL_LAB_STATE", "/var/lib/vmportal-lab/lab.json"))
# The local lab's daemons listen in its own directory; that directory is trusted in development and
# tests only, never by default in production.
LIBVIRT_SOCKET_DIRS = env_list(
    "VMPORTAL_LIBVIRT_SOCKET_DIRS",
    ["/run/libvirt", "/var/run/libvirt"] + ([str(LAB_STATE_FILE.parent)] if DEBUG or TESTING else []),
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
# A plan whose start job has not run this many seconds after its time is started by the periodic sweep
# (workers were down, or Redis lost the scheduled job): a scheduled plan never waits silently.
SCHEDULE_GRACE_SECONDS = env_int("VMPORTAL_SCHEDULE_GRACE_SECONDS", 120, minimum=10)
# --- Migration runs and backups ----------------------------------------------------------------------
# How long a run stays owned by its worker without a heartbeat (renewed about twice a second).
RUN_LEASE_SECONDS = env_int("VMPORTAL_RUN_LEASE_SECONDS", 30, minimum=3)
# The longest a move may take before the engine aborts it (the source keeps the VM).
MAX_MOVE_SECONDS = env_int("VMPORTAL_MAX_MOVE_SECONDS", 6 * 3600, minimum=60)
# Chunk size of the portal's own disk copies (cold moves, backups); a fault re-sends at most one chunk.
COLD_CHUNK_BYTES = env_int("VMPORTAL_COLD_CHUNK_BYTES", 32 * 1024 * 1024, minimum=1024 * 1024)
# How a cold move copies disks: "auto" = QEMU's block mirror from a paused carrier domain, falling back to the
# portal's chunked stream copy where that cannot be used; "mirror" or "stream" = only that path.
COLD_COPY = env_choice("VMPORTAL_COLD_COPY", "auto", ("auto", "mirror", "stream"))
# Backups: kept this many days; BAK-RECENT accepts one younger than BACKUP_MAX_AGE seconds.
BACKUP_RETENTION_DAYS = env_int("VMPORTAL_BACKUP_RETENTION_DAYS", 14, minimum=1)
BACKUP_MAX_AGE = env_int("VMPORTAL_BACKUP_MAX_AGE", 24 * 3600, minimum=60)
# Backups of VMs with local disks go to a pool of this name on another host (migrations_app.backupplace);
# empty: no such pool is looked for (shared storage, else beside each disk).
BACKUP_POOL = env_str("VMPORTAL_BACKUP_POOL", "backup")

LOG_LEVEL = env_choice("VMPORTAL_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    # django-axes logs every login at INFO; lock-outs and failed logins are in the audit log already
    "loggers": {"django.db.backends": {"level": "INFO"}, "axes": {"level": "WARNING"}},
}


# ---- REST API (api/): tokens for scripts, the session (with CSRF) for the browser ---------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "api.auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "api.pagination.Pages",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "api.errors.handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "vmportal API",
    "DESCRIPTION": "Inventory, migration plans, approvals, runs, backups and the audit log. "
    "Authenticate with `Authorization: Token <secret>` (create tokens on your account page) or a session.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "api.schema.add_errors"],
}
