from .auditlog import AuditLogEntry

__all__ = ["AuditLogEntry"]
