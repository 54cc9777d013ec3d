-- The batch's commit does not wait for the WAL flush (SET LOCAL, as a statement that can be
-- prepared). Safe: a batch lost with its commit in a server crash leaves its entries pending
-- (the claim is only a row lock), so the next run validates them again with the same result,
-- and the exception rows are idempotent. Nothing outside the database acts on the batch, and
-- any later synchronous commit (a review card made from these findings, the run's release)
-- flushes this one first.
SELECT set_config('synchronous_commit', 'off', true)
