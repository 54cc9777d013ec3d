SELECT count(*) FILTER (WHERE is_active AND agent_enabled),
       count(*) FILTER (WHERE is_active),
       count(*)
FROM public.tenants
