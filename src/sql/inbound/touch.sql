-- The reply is engagement: the contact's clock restarts (touched_by NULL, as for the agent's
-- own e-mail; the touch type is e-mail).
SELECT public.touch_engagement_clock($1, $2, $3, 'email', NULL, $4)
