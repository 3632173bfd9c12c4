from django.apps import AppConfig


class MigrationsAppConfig(AppConfig):
    name = "migrations_app"
    verbose_name = "Migrations"

    def ready(self) -> None:
        # logins, failed logins and lock-outs are written to the audit log
        # when a run ends (engine.runstate.run_finished), waiting runs are queued and the plan follows
        from migrations_app.services import runs  # noqa: F401
        from vmportal import auth  # noqa: F401
