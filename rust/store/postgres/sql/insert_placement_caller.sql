    -- On a caller's connection nothing is decided: the transaction may stay open for long,
    -- and no lock may be held through it. The next claim places these jobs.
    SELECT batch.ord, NULL::boolean AS head FROM batch
