SELECT {{job_columns}} FROM ferroq_jobs WHERE scope = ?1 AND id = ?2
