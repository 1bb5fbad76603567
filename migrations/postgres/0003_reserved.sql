-- ferroq schema, version 3: reserved for work on another branch; the integrator replaces this
-- placeholder with the real version 3.
SELECT 1;
