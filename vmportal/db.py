"""Database helpers shared by the apps."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from django.db import connection, models


def insert_many(model: type[models.Model], rows: Sequence[models.Model], fields: list[str]) -> None:
    """Insert `rows` in ONE statement, however many there are: INSERT … SELECT FROM unnest(one array per column).

    `bulk_create` splits large inserts into batches (PostgreSQL allows 65,535 parameters a statement), so
    its number of queries grows with the rows; an audit of a 500-VM plan writes ~16,000 results. Primary
    keys are not read back; use it for rows nothing refers to in the same transaction.
    """
    if not rows:
        return
    if _insert_recordset(model, rows, fields):
        return
    meta = model._meta
    columns, selects, params = [], [], []
    for name in fields:
        field = meta.get_field(name)
        column = field.column  # type: ignore[union-attr]
        values = [getattr(row, field.attname) for row in rows]  # type: ignore[union-attr]
        if isinstance(field, models.JSONField):
            params.append([json.dumps(v) for v in values])
            selects.append(f'"{column}"::jsonb')
            array_type = "text[]"
        else:
            base = re.sub(r"\(.*\)", "", field.db_type(connection) or "text")  # type: ignore[union-attr]  # varchar(32) → varchar
            params.append(values)
            selects.append(f'"{column}"')
            array_type = f"{base}[]"
        columns.append((column, array_type))
    names = ", ".join(f'"{c}"' for c, _ in columns)
    arrays = ", ".join(f"%s::{t}" for _, t in columns)
    sql = (
        f'INSERT INTO "{meta.db_table}" ({names}) SELECT {", ".join(selects)} '  # noqa: S608 (names from the model)
        f"FROM unnest({arrays}) AS t({names})"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _insert_recordset(model: type[models.Model], rows: Sequence[models.Model], fields: list[str]) -> bool:
    """`insert_many` with the rows as ONE JSON document (jsonb_to_recordset): the driver quotes one string
    instead of every element of every column array, which costs seconds for ~16,000 rows. False (nothing
    written) if a value has no exact JSON form (NaN, infinity); the caller then sends arrays."""
    from django.core.serializers.json import DjangoJSONEncoder

    meta = model._meta
    attnames, definitions, selects, as_text = [], [], [], []
    for name in fields:
        field = meta.get_field(name)
        column = field.column  # type: ignore[union-attr]
        attnames.append(field.attname)  # type: ignore[union-attr]
        # a JSON value travels as its text, so that a JSON null stays a JSON null (not SQL NULL)
        is_json = isinstance(field, models.JSONField)
        as_text.append(is_json)
        definitions.append(f'"{column}" ' + ("text" if is_json else (field.db_type(connection) or "text")))  # type: ignore[union-attr]
        selects.append(f'"{column}"::jsonb' if is_json else f'"{column}"')
    try:
        document = json.dumps(
            [
                {
                    a: (json.dumps(getattr(row, a)) if t else getattr(row, a))
                    for a, t in zip(attnames, as_text, strict=True)
                }
                for row in rows
            ],
            cls=DjangoJSONEncoder,
            allow_nan=False,
        )
    except (ValueError, TypeError):
        return False
    names = ", ".join(d.split(" ", 1)[0] for d in definitions)
    sql = (
        f'INSERT INTO "{meta.db_table}" ({names}) SELECT {", ".join(selects)} '  # noqa: S608 (names from the model)
        f"FROM jsonb_to_recordset(%s::jsonb) AS t({', '.join(definitions)})"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [document])
    return True


def _array(field: models.Field, values: list[object]) -> tuple[object, str, str]:  # type: ignore[type-arg]
    """(parameter, SQL array type, select expression) for one column of `insert_many`/`update_many`."""
    if isinstance(field, models.JSONField):
        return [json.dumps(v) for v in values], "text[]", "::jsonb"
    if isinstance(field, models.ForeignKey):
        base = re.sub(r"\(.*\)", "", field.target_field.db_type(connection) or "bigint")
        return values, f"{base}[]", ""
    base = re.sub(r"\(.*\)", "", field.db_type(connection) or "text")
    return values, f"{base}[]", ""


def update_many(model: type[models.Model], rows: Sequence[models.Model], fields: list[str]) -> None:
    """Write `fields` of `rows` in ONE statement, however many there are: UPDATE … FROM unnest(arrays).

    `bulk_update` splits large updates into batches (a statement takes at most 65,535 parameters), so its
    number of queries grows with the rows.
    """
    if not rows:
        return
    meta = model._meta
    pk = meta.pk
    assert pk is not None  # noqa: S101
    params: list[Any] = [[row.pk for row in rows]]
    columns = [(pk.column, "bigint[]", "")]
    for name in fields:
        field = meta.get_field(name)
        values = [getattr(row, field.attname) for row in rows]  # type: ignore[union-attr]
        param, array_type, cast = _array(field, values)  # type: ignore[arg-type,union-attr]
        params.append(param)
        columns.append((field.column, array_type, cast))  # type: ignore[union-attr,arg-type]
    names = ", ".join(f'"{c}"' for c, _, _ in columns)
    arrays = ", ".join(f"%s::{t}" for _, t, _ in columns)
    sets = ", ".join(f'"{c}" = t."{c}"{cast}' for c, _, cast in columns[1:])
    sql = (
        f'UPDATE "{meta.db_table}" SET {sets} FROM unnest({arrays}) AS t({names}) '  # noqa: S608 (names from the model)
        f'WHERE "{meta.db_table}"."{pk.column}" = t."{pk.column}"'
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
