-- Postgate DDL capture (opt-in). Run once per source database as a superuser:
--   psql -v ON_ERROR_STOP=1 -d yourdb -f sql/ddl-capture.sql
-- Event triggers describe each CREATE/ALTER TABLE, table rewrite and DROP TABLE in a
-- transactional logical message (prefix 'postgate-ddl'), which CDC reads in order with the rows
-- around it. The message lists the table's columns by attnum, so a rename is told exactly from a
-- drop plus an add, and carries what rows already there hold in a column added with a default.
-- It writes nothing else and needs no table. Remove it with:
--   DROP EVENT TRIGGER postgate_ddl; DROP EVENT TRIGGER postgate_ddl_drop;
--   DROP EVENT TRIGGER postgate_ddl_rewrite; DROP SCHEMA postgate_ddl CASCADE;

CREATE SCHEMA IF NOT EXISTS postgate_ddl;
REVOKE ALL ON SCHEMA postgate_ddl FROM PUBLIC;

-- A table's live columns (generated ones are not published), with the value rows that existed
-- when a column was added hold in it (attmissingval), as text.
CREATE OR REPLACE FUNCTION postgate_ddl.columns(rel oid) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'attnum', a.attnum, 'name', a.attname, 'type', a.atttypid::int8, 'typmod', a.atttypmod,
               'missing', CASE WHEN a.atthasmissing THEN (a.attmissingval::text::text[])[1] END)
           ORDER BY a.attnum), '[]'::jsonb)
    FROM pg_attribute a
    WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
$$;

CREATE OR REPLACE FUNCTION postgate_ddl.on_command_end() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT DISTINCT c.oid, n.nspname, c.relname, d.command_tag
        FROM pg_event_trigger_ddl_commands() d
        JOIN pg_class c ON d.classid = 'pg_catalog.pg_class'::regclass AND c.oid = d.objid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p')
    LOOP
        PERFORM pg_logical_emit_message(true, 'postgate-ddl', jsonb_build_object(
            'v', 1, 'tag', r.command_tag, 'oid', r.oid::int8, 'schema', r.nspname, 'table', r.relname,
            'columns', postgate_ddl.columns(r.oid))::text);
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands() WHERE command_tag IN ('ALTER PUBLICATION', 'CREATE PUBLICATION')) THEN
        PERFORM pg_logical_emit_message(true, 'postgate-ddl', jsonb_build_object('v', 1, 'tag', 'ALTER PUBLICATION')::text);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION postgate_ddl.on_rewrite() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    PERFORM pg_logical_emit_message(true, 'postgate-ddl', jsonb_build_object(
        'v', 1, 'tag', 'rewrite', 'oid', pg_event_trigger_table_rewrite_oid()::int8)::text);
END
$$;

CREATE OR REPLACE FUNCTION postgate_ddl.on_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT objid, schema_name, object_name FROM pg_event_trigger_dropped_objects()
             WHERE object_type = 'table' AND (original OR normal)
    LOOP
        PERFORM pg_logical_emit_message(true, 'postgate-ddl', jsonb_build_object(
            'v', 1, 'tag', 'DROP TABLE', 'oid', r.objid::int8, 'schema', r.schema_name, 'table', r.object_name)::text);
    END LOOP;
END
$$;

REVOKE ALL ON FUNCTION postgate_ddl.on_command_end(), postgate_ddl.on_rewrite(), postgate_ddl.on_drop() FROM PUBLIC;

DROP EVENT TRIGGER IF EXISTS postgate_ddl;
CREATE EVENT TRIGGER postgate_ddl ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'ALTER TABLE', 'ALTER PUBLICATION', 'CREATE PUBLICATION')
    EXECUTE FUNCTION postgate_ddl.on_command_end();
DROP EVENT TRIGGER IF EXISTS postgate_ddl_rewrite;
CREATE EVENT TRIGGER postgate_ddl_rewrite ON table_rewrite EXECUTE FUNCTION postgate_ddl.on_rewrite();
DROP EVENT TRIGGER IF EXISTS postgate_ddl_drop;
CREATE EVENT TRIGGER postgate_ddl_drop ON sql_drop WHEN TAG IN ('DROP TABLE', 'DROP SCHEMA', 'DROP OWNED')
    EXECUTE FUNCTION postgate_ddl.on_drop();
