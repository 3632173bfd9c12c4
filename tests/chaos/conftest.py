from tests.engine.conftest import lab_hosts, people, workers  # noqa: F401  (fixtures)
