SELECT EXISTS (SELECT 1 FROM public.engagement_clocks WHERE tenant_id = $1 AND next_touch_due <= $2)
