"""The hostile schema the conformance tests read: built fresh in the lab for each session.

Streams (table names are the stream names; the schema is the namespace):

- `hostile_types`: numeric NaN/±Infinity, double/real NaN/±Infinity, timestamp/timestamptz/date
  ±infinity, time 24:00, interval, jsonb (nested, unicode, a JSON `null` document), json, int and
  text arrays (NULL elements, quotes, commas, empty), a 2-D array, bytea (NUL bytes, empty), uuid,
  an enum, inet, money, bit varying, char(n), bigint extremes, numeric(40,12).
- `Weird "Name". With Space`: a table name with a quote, a dot and spaces; columns named `ID`,
  `select`, `with space`, `dot.ted`, `quo"te`, `café`, `UPPER`, `1st`.
- `items` and `Items`: two tables whose names differ only by case.
- `no_key_log`: no primary key, duplicate rows (REPLICA IDENTITY FULL so CDC can publish it). No
  row is NULL in every column: airbyte-cdk's in-process entrypoint re-serializes records with
  `omit_none`, so such a row reaches the suite as `{}` and fails its "record shares a field with
  the schema" check whatever the connector sent (an artifact of the in-process path only).
- `empty_table`: has a key, no rows (declared in `empty_streams`).
- `hostile_view`: a view over `hostile_types` (no key).
"""

from __future__ import annotations

from lab import quote_ident

WEIRD_TABLE = 'Weird "Name". With Space'

# Rows per stream, for count assertions.
EXPECTED_ROWS = {
    "hostile_types": 4,
    WEIRD_TABLE: 2,
    "items": 2,
    "Items": 3,
    "no_key_log": 3,
    "empty_table": 0,
    "hostile_view": 4,
}
EMPTY_STREAMS = ["empty_table"]


def build_schema_sql(schema: str) -> list[str]:
    s = quote_ident(schema)
    w = f"{s}.{quote_ident(WEIRD_TABLE)}"
    return [
        f"CREATE SCHEMA {s}",
        f"CREATE TYPE {s}.mood AS ENUM ('sad', 'ok', 'happy')",
        f"""CREATE TABLE {s}.hostile_types (
            id integer PRIMARY KEY,
            n numeric,
            n_scaled numeric(40,12),
            f8 double precision,
            f4 real,
            big bigint,
            ts timestamp,
            tstz timestamptz,
            d date,
            t time,
            ttz timetz,
            iv interval,
            j jsonb,
            js json,
            ints integer[],
            texts text[],
            grid integer[][],
            bin bytea,
            u uuid,
            flag boolean,
            m {s}.mood,
            addr inet,
            mon money,
            bits bit varying(16),
            fixed char(5),
            updated_at timestamptz NOT NULL DEFAULT now()
        )""",
        f"""INSERT INTO {s}.hostile_types
            (id, n, n_scaled, f8, f4, big, ts, tstz, d, t, ttz, iv, j, js, ints, texts, grid,
             bin, u, flag, m, addr, mon, bits, fixed) VALUES
            (1, 'NaN', 12345678901234567890.123456789012, 'NaN', 'NaN', 9223372036854775807,
             'infinity', 'infinity', 'infinity', '24:00:00', '23:59:59.999999+14', '1 year 2 mons 3 days 04:05:06.789',
             '{{"a": [1, 2, {{"b": null}}], "unicode": "é😀\u2028", "esc": "\\"\\\\\\n", "big": 12345678901234567890}}',
             '[1, "two", null, {{"k": 1.5e300}}]',
             '{{1,NULL,3}}', '{{"a,b","quo\\"te",NULL,"","NULL","back\\\\slash"}}', '{{{{1,2}},{{3,4}}}}',
             '\\x00ff0a27', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', true, 'happy', '2001:db8::1/64',
             '-92233720368547758.08', B'1010', 'ab'),
            (2, 'Infinity', -0.000000000001, '-Infinity', 'Infinity', -9223372036854775808,
             '-infinity', '-infinity', '-infinity', '00:00:00', '00:00:00-12', '-178000000 years',
             'null', '"just a string"',
             '{{}}', '{{}}', '{{}}', '\\x', '00000000-0000-0000-0000-000000000000', false, 'sad',
             '10.0.0.1', '0', B'', ''),
            (3, '-Infinity', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
             NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
            (4, 0.1, 1.5, 1e308, 3.4e38, 0,
             '2024-02-29 23:59:59.999999', '2024-02-29 23:59:59.999999+05:30', '0001-01-01',
             '12:34:56.789', '12:34:56+01', '00:00:00.000001',
             '{{"deep": {{"deeper": {{"deepest": [[[]]]}}}}}}', '{{}}',
             '{{2147483647,-2147483648}}', '{{"tab\tnew\nline"}}', '{{{{NULL}}}}',
             decode(repeat('ab', 1000), 'hex'), 'ffffffff-ffff-ffff-ffff-ffffffffffff', NULL, 'ok',
             '192.168.0.0/16', '1234.56', B'1111111111111111', 'xyz')""",
        f"""CREATE TABLE {w} (
            "ID" integer PRIMARY KEY,
            "select" text,
            "with space" text,
            "dot.ted" integer,
            "quo""te" text,
            "café" text,
            "UPPER" text,
            "1st" text
        )""",
        f"""INSERT INTO {w} VALUES
            (1, 'from', 'a b', 1, 'q"q', 'crème', 'UP', 'first'),
            (2, NULL, '', -1, '''', '🙂', NULL, '')""",
        f"CREATE TABLE {s}.items (id integer PRIMARY KEY, label text)",
        f"INSERT INTO {s}.items VALUES (1, 'lower one'), (2, 'lower two')",
        f'CREATE TABLE {s}."Items" (id integer PRIMARY KEY, label text)',
        f"""INSERT INTO {s}."Items" VALUES (1, 'Upper one'), (2, 'Upper two'), (3, 'Upper three')""",
        f"CREATE TABLE {s}.no_key_log (msg text, at timestamptz)",
        f"ALTER TABLE {s}.no_key_log REPLICA IDENTITY FULL",
        f"""INSERT INTO {s}.no_key_log VALUES
            ('dup', '2024-01-01T00:00:00Z'), ('dup', '2024-01-01T00:00:00Z'), (NULL, '2024-01-02T00:00:00Z')""",
        f"CREATE TABLE {s}.empty_table (id integer PRIMARY KEY, v text)",
        f"CREATE VIEW {s}.hostile_view AS SELECT id, n, ts, j, ints, bin FROM {s}.hostile_types",
    ]
