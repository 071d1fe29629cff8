"""The one settings module. Everything comes from environment variables with safe embedded defaults.

Embedded default: SQLite (WAL, busy timeout, IMMEDIATE transactions) and the Celery filesystem
broker, both inside ``$DICOMFLOW_HOME`` (default ``./var``). ``DATABASE_URL`` and
``CELERY_BROKER_URL`` switch to PostgreSQL / Redis / RabbitMQ for scale.

Every environment variable dicomflow uses is read here and nowhere else (README, "Configuration",
lists them all), strictly: a value that does not parse stops start-up with one
``ConfigurationError`` naming the variable and what it accepts (the CLI prints it as one
``error: ...`` line). Code reads the parsed values from ``django.conf.settings``; pure ``core``
code is handed them (e.g. ``ARCHIVE_LIMITS``).
"""

import datetime
import os
import re
import secrets
import zoneinfo
from pathlib import Path

import dj_database_url

from dicomflow.core.archive import ArchiveLimits
from dicomflow.core.env import Environment

ENV = Environment(os.environ)

# Everything dicomflow writes (catalog database and its WAL, logs, store, keys, uploads, options) is
# for the account that runs it only: files 0600, folders 0700. Set before the first file is made.
os.umask(0o077)

BASE_DIR = Path(__file__).resolve().parent
HOME = Path(ENV.text("DICOMFLOW_HOME", "var")).resolve()
STORE_DIR = HOME / "store"
DATASTORE_DIR = HOME / "datastore"
UPLOAD_DIR = HOME / "uploads"
WORK_DIR = HOME / "work"
LOG_DIR = HOME / "logs"
KEYS_DIR = HOME / "keys"
try:
    for _d in (HOME, STORE_DIR, DATASTORE_DIR, UPLOAD_DIR, WORK_DIR, LOG_DIR, KEYS_DIR, HOME / "static"):
        _d.mkdir(parents=True, exist_ok=True)
except OSError as _exc:
    raise ENV.invalid("DICOMFLOW_HOME", f"a folder dicomflow can create and write ({_d}: "
                      f"{_exc.strerror or _exc.__class__.__name__})") from None
try:  # a home made before (umask 022) is closed too: nothing inside is reachable by other users
    if HOME.stat().st_uid == os.getuid() and HOME.stat().st_mode & 0o077:
        HOME.chmod(0o700)
except OSError:
    pass
RUN_DIR = HOME / "run"  # control files of `dicomflow serve` (pid, heartbeats): one set per home
RUN_DIR.mkdir(exist_ok=True)


def _secret_key() -> str:
    """Generated on first run and kept in $DICOMFLOW_HOME (mode 600), never logged."""
    if ENV.raw("DICOMFLOW_SECRET_KEY"):
        return ENV.text("DICOMFLOW_SECRET_KEY")
    path = KEYS_DIR / "django_secret_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = ENV.boolean("DICOMFLOW_DEBUG", False)
ALLOWED_HOSTS = ENV.items("DICOMFLOW_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])

INSTALLED_APPS = [
    # Admin modules are discovered when the URLconf loads (web), not at every command's start-up.
    "django.contrib.admin.apps.SimpleAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_api_key",  # its abstract key model; our keys are accounts.ApiKey (per user)
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI / Redoc served locally, no CDN
    "django_celery_results",
    "axes",  # login throttling (dicomflow.accounts.throttle)
    "dicomflow.accounts",
    "dicomflow.catalog",
    "dicomflow.intake",
    "dicomflow.export",
    "dicomflow.projects",
    "dicomflow.deid",
    "dicomflow.processing",
    "dicomflow.quality",
    "dicomflow.api",
    "dicomflow.web",
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
    "dicomflow.accounts.middleware.PasswordChangeRequiredMiddleware",
    "dicomflow.accounts.middleware.IdleSessionMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a locked-out attempt into the lockout answer
]

ROOT_URLCONF = "dicomflow.urls"
WSGI_APPLICATION = "dicomflow.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# --- database -----------------------------------------------------------------------------------
# SQLite is shared by web, worker and receiver: WAL lets readers run beside one writer, the busy
# timeout makes writers queue instead of failing, and IMMEDIATE takes the write lock at BEGIN so
# two writers never deadlock on a lock upgrade ("database is locked").
SQLITE_PATH = HOME / "dicomflow.sqlite3"
DATABASE_URL = ENV.text("DATABASE_URL", f"sqlite:///{SQLITE_PATH}")


# Seconds a web/worker process keeps its database connection between requests (0: one per request).
# On PostgreSQL a kept connection saves the connection set-up of every request.
DB_CONN_MAX_AGE = ENV.integer("DICOMFLOW_DB_CONN_MAX_AGE", 0, minimum=0)


def _database(url: str) -> dict:
    try:
        config = dj_database_url.parse(url, conn_max_age=DB_CONN_MAX_AGE, conn_health_checks=DB_CONN_MAX_AGE > 0)
    except (ValueError, KeyError):
        config = {}
    if not config.get("ENGINE"):  # the URL may hold a password: never repeat it
        raise ENV.invalid("DATABASE_URL", "sqlite:///PATH, postgres://USER:PASSWORD@HOST:PORT/NAME "
                          "or another URL dj-database-url knows", secret=True)
    if config["ENGINE"] == "django.db.backends.postgresql":
        # No JIT: the catalog's queries are short; compiling them cost more than it saved (a page's
        # status filter spent 400 of its 800 ms in JIT at a million instances).
        config.setdefault("OPTIONS", {})["options"] = "-c jit=off"
    return config


DATABASES = {"default": _database(DATABASE_URL)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 60,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=60000;",
    }
    DATABASES["default"]["TEST"] = {"NAME": str(HOME / "test.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Passwords: not like the user's name, long enough, not one of the 20 000 most common, not digits only.
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
     "OPTIONS": {"min_length": ENV.integer("DICOMFLOW_PASSWORD_MIN_LENGTH", 10, minimum=8, maximum=128)}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Login throttling (django-axes, dicomflow.accounts.throttle): after LOGIN_FAILURE_LIMIT failed
# attempts a user name, and separately an address, is locked for LOGIN_LOCKOUT_MINUTES; the web
# login, the admin login, the token endpoint and X-Api-Key alike.
AUTHENTICATION_BACKENDS = [
    "dicomflow.accounts.throttle.ThrottledBackend",
    "django.contrib.auth.backends.ModelBackend",
]
DICOMFLOW_LOGIN_FAILURE_LIMIT = ENV.integer("DICOMFLOW_LOGIN_FAILURE_LIMIT", 5, minimum=1, maximum=1000)
DICOMFLOW_LOGIN_LOCKOUT_MINUTES = ENV.number("DICOMFLOW_LOGIN_LOCKOUT_MINUTES", 15.0, positive=True)
AXES_ENABLED = True
AXES_FAILURE_LIMIT = DICOMFLOW_LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = datetime.timedelta(minutes=DICOMFLOW_LOGIN_LOCKOUT_MINUTES)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # each on its own
AXES_RESET_ON_SUCCESS = True
AXES_DISABLE_ACCESS_LOG = True  # successful logins are in our audit log already
AXES_LOCKOUT_CALLABLE = "dicomflow.accounts.throttle.lockout_response"
AXES_SENSITIVE_PARAMETERS = ["password", "key", "token"]
AXES_VERBOSE = False
LANGUAGE_CODE = "en-us"
TIME_ZONE = ENV.text("DICOMFLOW_TIME_ZONE", "UTC")
try:
    zoneinfo.ZoneInfo(TIME_ZONE)
except (ValueError, zoneinfo.ZoneInfoNotFoundError):
    raise ENV.invalid("DICOMFLOW_TIME_ZONE", "an IANA time zone name such as UTC or Europe/Brussels") from None
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = HOME / "static"
WHITENOISE_USE_FINDERS = True  # serve app static files without a collectstatic step
MEDIA_ROOT = UPLOAD_DIR
MEDIA_URL = "media/"
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 50 * 1024 * 1024
FILE_UPLOAD_TEMP_DIR = str(WORK_DIR)
# The web app's own login for every user (the admin keeps its login for staff). A session ends after
# DICOMFLOW_SESSION_IDLE_HOURS without a request; an expired one sends the user to /login/?next=<where they were>.
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"
SESSION_COOKIE_AGE = int(ENV.number("DICOMFLOW_SESSION_IDLE_HOURS", 8.0, positive=True) * 3600)
# the age counts from the last request (to within 5 minutes: accounts.middleware.IdleSessionMiddleware)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"

# --- Celery ----------------------------------------------------------------------------------------
BROKER_DIR = HOME / "broker"
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
CELERY_BROKER_URL = ENV.text("CELERY_BROKER_URL", "filesystem://")
if not _URL.match(CELERY_BROKER_URL):
    raise ENV.invalid("CELERY_BROKER_URL", "a broker URL such as filesystem://, redis://HOST:6379/0 or "
                      "amqp://USER:PASSWORD@HOST:5672//", secret=True)
if CELERY_BROKER_URL.startswith("filesystem://"):
    for _d in ("queue", "processed", "control"):
        (BROKER_DIR / _d).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),  # else kombu writes ./control in the cwd
        "store_processed": False,
    }
    # The filesystem transport has no broadcast exchange: no remote control, no events.
    CELERY_WORKER_ENABLE_REMOTE_CONTROL = False
# One queue name for every task. Workers and senders sharing a Redis database or RabbitMQ vhost with
# another dicomflow (a second site, a concurrent test session) take a name of their own.
CELERY_TASK_DEFAULT_QUEUE = ENV.text("DICOMFLOW_CELERY_QUEUE", "celery")
if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,200}", CELERY_TASK_DEFAULT_QUEUE):
    raise ENV.invalid("DICOMFLOW_CELERY_QUEUE", "a queue name: 1 to 200 letters, digits, '_', '.', ':' or '-'")
CELERY_RESULT_BACKEND = ENV.text("CELERY_RESULT_BACKEND", "django-db")
if CELERY_RESULT_BACKEND != "django-db" and not _URL.match(CELERY_RESULT_BACKEND):
    raise ENV.invalid("CELERY_RESULT_BACKEND", "django-db or a result backend URL such as redis://HOST:6379/1",
                      secret=True)
CELERY_RESULT_EXTENDED = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = ENV.boolean("DICOMFLOW_CELERY_EAGER", False)
CELERY_BEAT_SCHEDULE_FILENAME = str(HOME / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "scan-watched-folders": {
        "task": "dicomflow.intake.tasks.scan_watched_folders",
        "schedule": ENV.number("DICOMFLOW_WATCH_INTERVAL_SECONDS", 60.0, positive=True),
    },
    "fail-stale-processing-stages": {  # stages whose worker died become failed, hence retryable
        "task": "dicomflow.processing.tasks.fail_stale_stages",
        "schedule": 600.0,
        "kwargs": {"older_than_seconds": ENV.number("DICOMFLOW_STAGE_MAX_SECONDS", 6 * 3600.0, positive=True)},
    },
    "recover-abandoned-jobs": {  # jobs whose worker died (lease run out) are sent to a worker again
        "task": "dicomflow.intake.tasks.recover_abandoned_jobs", "schedule": 60.0,
    },
    "purge-stale-upload-sessions": {"task": "dicomflow.intake.tasks.purge_stale_upload_sessions", "schedule": 3600.0},
    "retention": {  # working copies older than DICOMFLOW_RETAIN_*_DAYS are deleted (processing.retention)
        "task": "dicomflow.processing.tasks.apply_retention",
        "schedule": ENV.number("DICOMFLOW_RETENTION_INTERVAL_SECONDS", 24 * 3600.0, positive=True),
    },
    # the automatic path's safety net: series quiet for long enough whose job was not started yet
    # (the countdown sent after each import normally starts them; see processing.tasks)
    "start-automatic-processing": {"task": "dicomflow.processing.tasks.start_automatic_jobs", "schedule": 30.0},
}

# --- dicomflow ------------------------------------------------------------------------------------
# fsync policy of the file store: "batch" (default) flushes the store's file system once per
# catalogued batch before the batch's rows commit, so the catalog never names a file that a power
# cut could lose; "always" fsyncs every file; "never" leaves it to the OS (benchmarks, tests).
DICOMFLOW_FSYNC = ENV.choice("DICOMFLOW_FSYNC", "batch", ("always", "batch", "never"))
DICOMFLOW_IMPORT_WORKERS = ENV.integer("DICOMFLOW_IMPORT_WORKERS", os.cpu_count() or 1, minimum=1)
DICOMFLOW_IMPORT_BATCH = ENV.integer("DICOMFLOW_IMPORT_BATCH", 500, minimum=1)
DICOMFLOW_WATCH_STABLE_MINUTES = ENV.number("DICOMFLOW_WATCH_STABLE_MINUTES", 10.0, minimum=0)
_AE_TITLE = r"[\x20-\x5b\x5d-\x7e]{1,16}"  # 1-16 printable ASCII characters, no backslash
DICOMFLOW_SCP_AET = ENV.text("DICOMFLOW_SCP_AET", "DICOMFLOW")
if not re.fullmatch(_AE_TITLE, DICOMFLOW_SCP_AET):
    raise ENV.invalid("DICOMFLOW_SCP_AET", "an AE title: 1 to 16 printable ASCII characters, no backslash")
DICOMFLOW_SCP_PORT = ENV.integer("DICOMFLOW_SCP_PORT", 11112, minimum=0, maximum=65535)
# AET@HOST rules; their spelling is checked here, host names are resolved when the receiver starts.
DICOMFLOW_SCP_ALLOW = ENV.items("DICOMFLOW_SCP_ALLOW")
if not all(re.fullmatch(rf"(\*|{_AE_TITLE})@[^\s@]+", rule) for rule in DICOMFLOW_SCP_ALLOW):
    raise ENV.invalid("DICOMFLOW_SCP_ALLOW", "comma-separated AET@HOST entries (AET or HOST may be *, "
                      "HOST may be an IP address, a CIDR network or a host name)")
# Plain storage associations are served by the receiver's own fast path (intake/network/fastpath.py);
# 0 hands every association to pynetdicom (the fallback that serves everything else anyway).
DICOMFLOW_SCP_FASTPATH = ENV.boolean("DICOMFLOW_SCP_FASTPATH", True)
# The receiver's intake filter (a configured IntakeFilter's name); empty: the default filter
# (localizers and scouts catalogued but kept out of processing, nothing dropped).
DICOMFLOW_SCP_INTAKE_FILTER = ENV.text("DICOMFLOW_SCP_INTAKE_FILTER", "")
if DICOMFLOW_SCP_INTAKE_FILTER and not re.fullmatch(r"[-a-zA-Z0-9_]{1,64}", DICOMFLOW_SCP_INTAKE_FILTER):
    raise ENV.invalid("DICOMFLOW_SCP_INTAKE_FILTER", "the name (slug) of a configured intake filter")
# A connection must have sent its whole A-ASSOCIATE-RQ within this many seconds or it is closed; no
# more than DICOMFLOW_SCP_MAX_PENDING connections may wait for theirs at once (intake/network/scp.py).
DICOMFLOW_SCP_REQUEST_TIMEOUT = ENV.number("DICOMFLOW_SCP_REQUEST_TIMEOUT", 5.0, positive=True)
DICOMFLOW_SCP_MAX_PENDING = ENV.integer("DICOMFLOW_SCP_MAX_PENDING", 64, minimum=1)
DICOMFLOW_WEB_PORT = ENV.integer("DICOMFLOW_WEB_PORT", 8000, minimum=1, maximum=65535)
# The web server (waitress, `dicomflow web`): an event loop reads every request whole before one of
# the threads runs it, so slow clients hold no thread; a connection that sends nothing for
# READ_TIMEOUT seconds while its request is incomplete (or while idle) is closed.
DICOMFLOW_WEB_THREADS = ENV.integer("DICOMFLOW_WEB_THREADS", 8, minimum=1, maximum=256)
DICOMFLOW_WEB_READ_TIMEOUT = ENV.integer("DICOMFLOW_WEB_READ_TIMEOUT", 30, minimum=1, maximum=3600)
# A worker renews the lease of the job it runs; a job whose lease ran out (its worker died) is taken over.
DICOMFLOW_LEASE_SECONDS = ENV.integer("DICOMFLOW_LEASE_SECONDS", 120, minimum=2, maximum=86400)
# `dicomflow serve` restarts a Celery worker whose heartbeat file is older than this (hung, stopped).
DICOMFLOW_WORKER_HEARTBEAT_TIMEOUT = ENV.integer("DICOMFLOW_WORKER_HEARTBEAT_TIMEOUT", 60, minimum=2, maximum=86400)
DICOMFLOW_WEB_CONNECTION_LIMIT = ENV.integer("DICOMFLOW_WEB_CONNECTION_LIMIT", 500, minimum=1, maximum=100_000)
# Rules are evaluated on the new series of every finished import (processing.signals); 0 turns it off.
DICOMFLOW_EVALUATE_ON_IMPORT = ENV.boolean("DICOMFLOW_EVALUATE_ON_IMPORT", True)
# The automatic path is switched on per template (Template.auto_process / auto_project); this key is
# only the default project of templates that switch it on without naming one ('' = they must name one).
DICOMFLOW_AUTO_PROCESS_PROJECT = ENV.text("DICOMFLOW_AUTO_PROCESS_PROJECT", "")
if DICOMFLOW_AUTO_PROCESS_PROJECT and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", DICOMFLOW_AUTO_PROCESS_PROJECT):
    raise ENV.invalid("DICOMFLOW_AUTO_PROCESS_PROJECT", "a research project key (letters, digits, '_', '.', '-')")
# A series starts its automatic job once no instance of it arrived for this long (a modality that
# sends one series in several associations still gets one job, on the whole series).
DICOMFLOW_AUTO_PROCESS_QUIET_SECONDS = ENV.number("DICOMFLOW_AUTO_PROCESS_QUIET_SECONDS", 30.0, minimum=0)
# Resumable uploads (intake.resumable.UploadLimits) and how long an idle one is kept.
DICOMFLOW_UPLOAD_MAX_BYTES = ENV.integer("DICOMFLOW_UPLOAD_MAX_BYTES", 20 * 1024**3, minimum=1)
DICOMFLOW_UPLOAD_MAX_FILES = ENV.integer("DICOMFLOW_UPLOAD_MAX_FILES", 100_000, minimum=1)
DICOMFLOW_UPLOAD_MAX_CHUNK = ENV.integer("DICOMFLOW_UPLOAD_MAX_CHUNK", 8 * 1024**2, minimum=1)
# Quotas on uploads in progress (declared bytes of resumable sessions not yet imported, ZIP uploads not yet
# imported), per user and for the whole server, and the free space every new upload must leave on the
# upload (and store) file system (intake.resumable.check_room).
DICOMFLOW_UPLOAD_QUOTA_USER = ENV.integer("DICOMFLOW_UPLOAD_QUOTA_USER", 50 * 1024**3, minimum=1)
DICOMFLOW_UPLOAD_QUOTA_TOTAL = ENV.integer("DICOMFLOW_UPLOAD_QUOTA_TOTAL", 200 * 1024**3, minimum=1)
DICOMFLOW_UPLOAD_RESERVE = ENV.integer("DICOMFLOW_UPLOAD_RESERVE", 2 * 1024**3, minimum=0)
DICOMFLOW_UPLOAD_STALE_DAYS = ENV.number("DICOMFLOW_UPLOAD_STALE_DAYS", 7.0, positive=True)
# E-mail (Django's mail framework): notifications of failed (and, per project, finished) long jobs.
# The console backend by default (mails are printed to the log of the process that sends them);
# EMAIL_HOST set → SMTP. EMAIL_BACKEND may name console, smtp, file (EMAIL_FILE_PATH), locmem or dummy.
_EMAIL_BACKENDS = {"console", "smtp", "file", "locmem", "dummy"}
EMAIL_HOST = ENV.text("EMAIL_HOST", "")
_EMAIL_MODULES = {"file": "filebased"}  # Django's module names
EMAIL_BACKEND = "django.core.mail.backends.{}.EmailBackend".format(_EMAIL_MODULES.get(
    _email := ENV.choice("EMAIL_BACKEND", "smtp" if EMAIL_HOST else "console", sorted(_EMAIL_BACKENDS)).lower(),
    _email))
EMAIL_PORT = ENV.integer("EMAIL_PORT", 25, minimum=1, maximum=65535)
EMAIL_HOST_USER = ENV.text("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = ENV.raw("EMAIL_HOST_PASSWORD") or ""
EMAIL_USE_TLS = ENV.boolean("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = ENV.boolean("EMAIL_USE_SSL", False)
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ENV.invalid("EMAIL_USE_SSL", "off when EMAIL_USE_TLS is on (STARTTLS and implicit TLS exclude each other)")
EMAIL_TIMEOUT = ENV.number("EMAIL_TIMEOUT", 30.0, positive=True)
EMAIL_FILE_PATH = str(Path(ENV.text("EMAIL_FILE_PATH", str(HOME / "mail"))).expanduser())
DEFAULT_FROM_EMAIL = ENV.text("DEFAULT_FROM_EMAIL", "dicomflow@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
EMAIL_SUBJECT_PREFIX = "[dicomflow] "
# Who is told when something fails and no project's data manager can be (plus active superusers).
DICOMFLOW_ADMIN_EMAILS = ENV.items("DICOMFLOW_ADMIN_EMAILS")
if not all(re.fullmatch(r"[^\s@,]+@[^\s@,]+", a) for a in DICOMFLOW_ADMIN_EMAILS):
    raise ENV.invalid("DICOMFLOW_ADMIN_EMAILS", "comma-separated e-mail addresses")
DICOMFLOW_NOTIFY = ENV.boolean("DICOMFLOW_NOTIFY", True)  # 0: no notification mails at all
# Disk cap of the file store (intake.diskcap): a new file is refused, with the reason, when the store
# would hold more than MAX bytes (0: no cap) or its disk keep less than MIN_FREE bytes free (0: none).
DICOMFLOW_STORE_MAX_BYTES = ENV.integer("DICOMFLOW_STORE_MAX_BYTES", 0, minimum=0)
DICOMFLOW_STORE_MIN_FREE_BYTES = ENV.integer("DICOMFLOW_STORE_MIN_FREE_BYTES", 1024**3, minimum=0)
# Retention of working copies (processing.retention), in days; 0 keeps them for ever.
DICOMFLOW_RETAIN_DATASTORE_DAYS = ENV.number("DICOMFLOW_RETAIN_DATASTORE_DAYS", 30.0, minimum=0)
DICOMFLOW_RETAIN_JOB_DAYS = ENV.number("DICOMFLOW_RETAIN_JOB_DAYS", 30.0, minimum=0)
DICOMFLOW_RETAIN_UPLOAD_DAYS = ENV.number("DICOMFLOW_RETAIN_UPLOAD_DAYS", 7.0, minimum=0)
DICOMFLOW_RETAIN_EXPORT_DAYS = ENV.number("DICOMFLOW_RETAIN_EXPORT_DAYS", 7.0, minimum=0)
# How far an archive may expand (DICOMFLOW_ARCHIVE_*): parsed once here, handed to core's extraction.
ARCHIVE_LIMITS = ArchiveLimits.from_env(os.environ)
# What templates may reach (core.operator_registry): named commands, HTTP endpoints, export roots.
# Only the machine's operator edits this file; a missing file allows nothing.
DICOMFLOW_PROCESSORS = Path(ENV.text("DICOMFLOW_PROCESSORS", str(HOME / "processors.json"))).expanduser()
PROJECT_KEYS_DIR = KEYS_DIR / "projects"  # per-project de-identification keys (core.deid.keys.KeyStore)
LOG_LEVEL = ENV.choice("DICOMFLOW_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # X-Api-Key first: its challenge makes missing credentials a 401; the browser uses its session.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "dicomflow.accounts.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "EXCEPTION_HANDLER": "dicomflow.api.problems.exception_handler",
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "dicomflow API",
    "DESCRIPTION": (
        "REST API of dicomflow: `X-Api-Key: <key>` on every endpoint, errors as RFC 9457 problem details.\n\n"
        "DICOMweb (DICOM PS3.18: STOW-RS, QIDO-RS, WADO-RS) is served outside this API under `/dicomweb/` "
        "and, per research project, `/dicomweb/projects/<key>/`, with the same keys and access rules; "
        "see the README's DICOMweb section for the resources and matching."
    ),
    "VERSION": "0.1.0",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "plain"},
        "file": {
            "class": "logging.handlers.RotatingFileHandler",
            "filename": str(LOG_DIR / "dicomflow.log"),
            "maxBytes": 10 * 1024 * 1024,
            "backupCount": 5,
            "formatter": "plain",
        },
    },
    "loggers": {
        "dicomflow": {"handlers": ["stderr", "file"], "level": LOG_LEVEL},
        "pynetdicom": {"handlers": ["stderr"], "level": "WARNING"},
    },
}
