-- Supabase compatibility shim.
--
-- On Supabase the roles anon/authenticated/service_role and auth.uid() already exist and are
-- left untouched. On vanilla PostgreSQL they are created so that the policies and grants of
-- the later migrations mean the same thing in both places.
-- Roles are cluster-wide: two databases migrating at once may race to create them, hence the
-- exception handlers rather than a bare IF NOT EXISTS.

DO $shim$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN NOINHERIT', r);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;
            END;
        END IF;
    END LOOP;
END
$shim$;

CREATE SCHEMA IF NOT EXISTS auth;

DO $shim$
BEGIN
    IF NOT EXISTS (
        SELECT 1
        FROM pg_catalog.pg_proc p
        JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'auth' AND p.proname = 'uid' AND p.pronargs = 0
    ) THEN
        -- Same contract as Supabase: the JWT subject from the per-request settings that
        -- PostgREST sets, NULL when there is none.
        EXECUTE $fn$
            CREATE FUNCTION auth.uid() RETURNS uuid
            LANGUAGE sql STABLE
            SET search_path = ''
            AS $body$
                SELECT nullif(
                    coalesce(
                        nullif(pg_catalog.current_setting('request.jwt.claim.sub', true), ''),
                        nullif(pg_catalog.current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'
                    ),
                    ''
                )::uuid
            $body$
        $fn$;
    END IF;
END
$shim$;

GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION auth.uid() TO anon, authenticated, service_role;
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
