SELECT count(*) AS total,
       count(*) FILTER (WHERE e.next_touch_due > $2) AS compliant,
       count(*) FILTER (WHERE e.next_touch_due <= $2) AS overdue,
       CASE WHEN count(*) = 0 THEN 100::float8
            ELSE round(100.0 * count(*) FILTER (WHERE e.next_touch_due > $2) / count(*), 2)::float8
       END AS compliance_rate,
       -- Whole days overdue (engagement_days_overdue, inlined for speed).
       coalesce(round(avg(floor(extract(epoch FROM ($2 - e.next_touch_due)) / 86400)::integer)
                      FILTER (WHERE e.next_touch_due <= $2), 2), 0)::float8 AS avg_days_overdue
FROM public.engagement_clocks e
WHERE e.tenant_id = $1
