//! Store conformance: the operations of the `Store` trait, against a real PostgreSQL
//! ($FERROQ_TEST_DATABASE_URL, default the local server; each test in its own schema) and a
//! real SQLite file (each test its own). Every case is written once against the trait and
//! runs on both backends, as `postgres::case` and `sqlite::case`; one file per family.

mod support;

mod claim_finish;
mod leases;
mod schema;

support::conformance! {
    both: [
        // claim, finish
        claim_finish::blocking_queue_hands_out_one_job_at_a_time_in_fifo_order,
        claim_finish::a_retrying_head_blocks_its_queue_until_due,
        claim_finish::concurrent_queue_respects_its_limit_across_claims,
        claim_finish::scopes_never_see_each_other,
        // extend_leases, rescue_expired
        leases::a_stale_attempt_cannot_finish_a_rescued_job,
        // migrate, creates_schema_on_first_use, close
        schema::migrate_is_idempotent,
    ],
    postgres_only: [
    ],
}
