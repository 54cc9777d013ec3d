-- Default privileges of the current role that give anon, authenticated or PUBLIC anything on
-- new tables, sequences or functions: (schema or NULL for the global ones, object type,
-- grantee, privilege, grantable). The built-in EXECUTE for PUBLIC on functions counts too
-- when no global entry for functions replaces it.
WITH me AS (
    SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user
), api AS (
    SELECT r.oid, r.rolname::text AS name FROM pg_catalog.pg_roles r
    WHERE r.rolname IN ('anon', 'authenticated')
    UNION ALL SELECT 0::oid, 'PUBLIC'
)
SELECT n.nspname::text, d.defaclobjtype::text, api.name, a.privilege_type, a.is_grantable
FROM pg_catalog.pg_default_acl d
LEFT JOIN pg_catalog.pg_namespace n ON n.oid = d.defaclnamespace
CROSS JOIN LATERAL pg_catalog.aclexplode(d.defaclacl) a
JOIN api ON api.oid = a.grantee
WHERE d.defaclrole = (SELECT oid FROM me)
  AND d.defaclobjtype IN ('r', 'S', 'f')
UNION ALL
SELECT NULL, 'f', 'PUBLIC', 'EXECUTE', false
WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_default_acl d
                  WHERE d.defaclrole = (SELECT oid FROM me) AND d.defaclnamespace = 0
                    AND d.defaclobjtype = 'f')
ORDER BY 1 NULLS FIRST, 2, 3, 4
