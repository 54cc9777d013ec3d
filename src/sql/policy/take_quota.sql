SELECT public.rate_limit_take($1, $2, $3, $4)
