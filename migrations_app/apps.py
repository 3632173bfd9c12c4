from django.apps import AppConfig


class MigrationsAppConfig(AppConfig):
    name = "migrations_app"
    verbose_name = "Migrations"

    def ready(self) -> None:
        # logins, failed logins and lock-outs are written to the audit log
        from vmportal import auth  # noqa: F401
