-- Purge finished jobs the filter matches ($4: finished states only, so no head is deleted).
DELETE FROM ferroq_jobs AS j
WHERE {{filter}}
