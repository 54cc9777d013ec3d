-- Set the global switch, keeping the other keys of agent_config; the row is created when missing.
INSERT INTO public.system_config AS s (key, value, updated_at)
VALUES ('agent_config',
        jsonb_build_object('global_enabled', $1::boolean,
                           'kill_switch_reason', CASE WHEN $1::boolean THEN NULL ELSE $3::text END,
                           'changed_by', $2::text, 'change_reason', $3::text, 'changed_at', $4::timestamptz),
        $4::timestamptz)
ON CONFLICT (key) DO UPDATE
SET value = s.value || EXCLUDED.value, updated_at = EXCLUDED.updated_at
