-- The database clock, and the last tick of each periodic entry of scope ?1 (see the PostgreSQL
-- twin).
SELECT clock.now, p.name, p.last_tick
FROM (SELECT {{now}} AS now) AS clock
LEFT JOIN ferroq_periodic AS p ON p.scope = ?1
