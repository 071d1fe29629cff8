"""The one settings module. Everything comes from environment variables with safe embedded defaults.

Embedded default: SQLite (WAL, busy timeout, IMMEDIATE transactions) and the Celery filesystem
broker, both inside ``$DICOMFLOW_HOME`` (default ``./var``). ``DATABASE_URL`` and
``CELERY_BROKER_URL`` switch to PostgreSQL / Redis / RabbitMQ for scale.
"""

import os
import secrets
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent
HOME = Path(os.environ.get("DICOMFLOW_HOME", "var")).resolve()
HOME.mkdir(parents=True, exist_ok=True)
STORE_DIR = HOME / "store"
DATASTORE_DIR = HOME / "datastore"
UPLOAD_DIR = HOME / "uploads"
WORK_DIR = HOME / "work"
LOG_DIR = HOME / "logs"
KEYS_DIR = HOME / "keys"
for _d in (STORE_DIR, DATASTORE_DIR, UPLOAD_DIR, WORK_DIR, LOG_DIR, KEYS_DIR, HOME / "static"):
    _d.mkdir(parents=True, exist_ok=True)


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _secret_key() -> str:
    """Generated on first run and kept in $DICOMFLOW_HOME (mode 600), never logged."""
    if os.environ.get("DICOMFLOW_SECRET_KEY"):
        return os.environ["DICOMFLOW_SECRET_KEY"]
    path = KEYS_DIR / "django_secret_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = _env_bool("DICOMFLOW_DEBUG", False)
ALLOWED_HOSTS = os.environ.get("DICOMFLOW_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1],testserver").split(",")

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
    "dicomflow.accounts",
    "dicomflow.catalog",
    "dicomflow.intake",
    "dicomflow.export",
    "dicomflow.projects",
    "dicomflow.deid",
    "dicomflow.processing",
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
DATABASE_URL = os.environ.get("DATABASE_URL", f"sqlite:///{SQLITE_PATH}")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 60,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=60000;",
    }
    DATABASES["default"]["TEST"] = {"NAME": str(HOME / "test.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("DICOMFLOW_TIME_ZONE", "UTC")
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
LOGIN_URL = "/admin/login/"

# --- Celery ----------------------------------------------------------------------------------------
BROKER_DIR = HOME / "broker"
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
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
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", "django-db")
CELERY_RESULT_EXTENDED = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = _env_bool("DICOMFLOW_CELERY_EAGER", False)
CELERY_BEAT_SCHEDULE_FILENAME = str(HOME / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "scan-watched-folders": {
        "task": "dicomflow.intake.tasks.scan_watched_folders",
        "schedule": float(os.environ.get("DICOMFLOW_WATCH_INTERVAL_SECONDS", "60")),
    },
    "fail-stale-processing-stages": {  # stages whose worker died become failed, hence retryable
        "task": "dicomflow.processing.tasks.fail_stale_stages",
        "schedule": 600.0,
        "kwargs": {"older_than_seconds": float(os.environ.get("DICOMFLOW_STAGE_MAX_SECONDS", str(6 * 3600)))},
    },
    "purge-stale-upload-sessions": {"task": "dicomflow.intake.tasks.purge_stale_upload_sessions", "schedule": 3600.0},
}

# --- dicomflow ------------------------------------------------------------------------------------
# fsync policy of the file store: "batch" (default) flushes the store's file system once per
# catalogued batch before the batch's rows commit, so the catalog never names a file that a power
# cut could lose; "always" fsyncs every file; "never" leaves it to the OS (benchmarks, tests).
DICOMFLOW_FSYNC = os.environ.get("DICOMFLOW_FSYNC", "batch")
DICOMFLOW_IMPORT_WORKERS = int(os.environ.get("DICOMFLOW_IMPORT_WORKERS", str(os.cpu_count() or 1)))
DICOMFLOW_IMPORT_BATCH = int(os.environ.get("DICOMFLOW_IMPORT_BATCH", "500"))
DICOMFLOW_WATCH_STABLE_MINUTES = float(os.environ.get("DICOMFLOW_WATCH_STABLE_MINUTES", "10"))
DICOMFLOW_SCP_AET = os.environ.get("DICOMFLOW_SCP_AET", "DICOMFLOW")
DICOMFLOW_SCP_PORT = int(os.environ.get("DICOMFLOW_SCP_PORT", "11112"))
DICOMFLOW_SCP_ALLOW = [a for a in os.environ.get("DICOMFLOW_SCP_ALLOW", "").split(",") if a]
# Plain storage associations are served by the receiver's own fast path (intake/network/fastpath.py);
# 0 hands every association to pynetdicom (the fallback that serves everything else anyway).
DICOMFLOW_SCP_FASTPATH = _env_bool("DICOMFLOW_SCP_FASTPATH", True)
DICOMFLOW_WEB_PORT = int(os.environ.get("DICOMFLOW_WEB_PORT", "8000"))
DICOMFLOW_STANDARD_DIR = os.environ.get("DICOMFLOW_STANDARD_DIR", "")

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
        "dicomflow": {"handlers": ["stderr", "file"], "level": os.environ.get("DICOMFLOW_LOG_LEVEL", "INFO")},
        "pynetdicom": {"handlers": ["stderr"], "level": "WARNING"},
    },
}
