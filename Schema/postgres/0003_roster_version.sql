-- The roster's version: raised by every statement that changes the roster, so a process keeps
-- the roster it read and reads it again only when another process (or this one) changed it.
CREATE TABLE roster_version (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    version bigint NOT NULL
);
INSERT INTO roster_version (version) VALUES (1);

-- On one line: the migration runner ends a statement at a line that ends with a semicolon.
-- Its search_path is the schema it was made in, whoever changes the roster (psql, pg_restore).
CREATE FUNCTION roster_changed() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$ BEGIN UPDATE roster_version SET version = version + 1; RETURN NULL; END $$;

CREATE TRIGGER roster_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON roster
    FOR EACH STATEMENT EXECUTE FUNCTION roster_changed();
