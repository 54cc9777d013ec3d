-- An e-mail touched the contact (the agent's delivered e-mail, or the contact's reply): the
-- clock restarts. touched_by NULL: no person made this touch (defect 9).
SELECT public.touch_engagement_clock($1, $2, $3, 'email', NULL, $4)
