SELECT {{job_columns}}, {{blocked_by}} FROM ferroq_jobs AS j WHERE j.scope = $1 AND j.id = $2
