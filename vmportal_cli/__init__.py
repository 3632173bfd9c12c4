"""The `vmportal` command line: talks to a portal's REST API with a personal token."""
