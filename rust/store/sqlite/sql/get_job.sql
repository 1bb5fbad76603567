SELECT {{job_columns}}, {{blocked_by}} FROM ferroq_jobs WHERE scope = ?1 AND id = ?2
