//! Store conformance: the operations of the `Store` trait, against a real PostgreSQL
//! ($FERROQ_TEST_DATABASE_URL, default the local server; each test in its own schema) and a
//! real SQLite file (each test its own). Every case is written once against the trait and
//! runs on both backends, as `postgres::case` and `sqlite::case`; one file per family.

mod support;

mod caller_tx;
mod claim_finish;
mod control;
mod insert;
mod leases;
mod listing;
mod periodic;
mod schema;
mod transitions;
mod turns;
mod unique;
mod wakeups;

support::conformance! {
    both: [
        // insert_jobs
        insert::inserted_jobs_come_back_in_input_order_with_their_options,
        insert::an_empty_batch_inserts_nothing,
        insert::a_large_batch_keeps_its_input_order,
        insert::names_and_params_are_stored_as_given,
        insert::bytes_params_come_back_byte_for_byte_beside_json_ones,
        insert::a_delayed_job_is_scheduled_and_claimed_only_once_due,
        insert::a_job_scheduled_at_a_time_keeps_that_time_to_the_microsecond,
        // claim, finish
        claim_finish::blocking_queue_hands_out_one_job_at_a_time_in_fifo_order,
        claim_finish::a_blocking_queue_runs_jobs_in_scheduled_order_then_insert_order,
        claim_finish::a_retrying_head_blocks_its_queue_until_due,
        claim_finish::concurrent_queue_respects_its_limit_across_claims,
        claim_finish::concurrent_jobs_are_claimed_by_priority_then_fifo,
        claim_finish::a_claim_hands_out_no_more_than_its_limit,
        claim_finish::a_claim_takes_no_more_blocking_heads_than_its_blocking_limit,
        claim_finish::a_concurrent_job_is_claimed_only_by_workers_serving_its_queue,
        claim_finish::a_claim_starts_an_attempt_under_a_fresh_lease,
        claim_finish::scopes_never_see_each_other,
        claim_finish::finish_writes_each_kind_of_outcome,
        claim_finish::finish_applies_only_the_outcomes_whose_lease_still_holds,
        claim_finish::a_claim_takes_only_jobs_of_the_actions_it_serves,
        claim_finish::a_blocking_head_of_an_unserved_action_holds_its_queue,
        // turns between queues
        turns::a_claim_places_every_new_job_before_it_finds_nothing,
        turns::ready_blocking_queues_take_turns_whatever_their_names_and_backlogs,
        turns::concurrent_queues_share_a_claim_by_their_running_jobs,
        turns::a_pattern_gives_each_matching_queue_its_own_limit,
        turns::a_worker_limited_to_some_queues_claims_only_from_them,
        turns::listings_name_the_job_a_waiting_job_waits_behind,
        // extend_leases, rescue_expired
        leases::a_stale_attempt_cannot_finish_a_rescued_job,
        leases::extend_leases_returns_only_the_leases_still_held,
        leases::an_extended_lease_outlives_its_first_term,
        leases::rescue_makes_an_abandoned_job_runnable_again,
        leases::rescue_hands_a_job_out_of_attempts_back_for_its_failure_hook,
        leases::holds_lease_is_true_only_for_the_running_attempt,
        leases::rescue_leaves_live_leases_and_other_scopes_alone,
        // get_job, list_jobs, count_jobs
        listing::get_job_finds_a_job_of_its_own_scope_only,
        listing::list_and_count_filter_by_queue_action_and_state,
        listing::search_is_a_case_insensitive_substring_of_action_params_or_error,
        listing::search_reads_json_params_only,
        listing::search_ignores_case_beyond_ascii,
        listing::search_takes_percent_and_underscore_literally,
        listing::listings_are_ordered_and_paged_while_counts_ignore_paging,
        listing::bulk_changes_apply_to_their_states_only_and_refuse_others,
        // retry_job, cancel_job, delete_completed
        transitions::retry_makes_a_failed_job_available_again,
        transitions::retry_runs_a_waiting_or_discarded_job_now,
        transitions::retry_refuses_running_completed_unknown_and_foreign_jobs,
        transitions::cancel_discards_a_job_that_has_not_started,
        transitions::cancel_refuses_finished_unknown_and_foreign_jobs,
        transitions::cancelling_a_retrying_head_unblocks_its_queue,
        transitions::delete_completed_deletes_only_completed_jobs_older_than_the_retention,
        // caller_insert, caller_complete
        caller_tx::caller_insert_rows_decode_into_the_inserted_jobs_in_input_order,
        caller_tx::a_caller_insert_takes_bytes_params_byte_for_byte,
        caller_tx::a_caller_insert_rolled_back_stores_nothing,
        caller_tx::a_caller_insert_committed_is_stored_and_claimable,
        caller_tx::a_caller_insert_is_announced_only_when_the_caller_commits,
        caller_tx::caller_complete_completes_a_running_job_while_its_lease_holds,
        caller_tx::caller_complete_with_a_stale_lease_changes_nothing,
        caller_tx::caller_complete_rolls_back_with_the_callers_transaction,
        // pause_queue, resume_queue, paused_queues; cancel_job of a running job
        control::a_paused_queue_starts_nothing_until_resumed,
        control::a_prefix_pause_holds_every_matching_queue_and_no_other,
        control::running_jobs_of_a_paused_queue_keep_their_leases_and_finish,
        control::cancel_of_a_running_job_records_the_request_once,
        control::an_outcome_that_would_run_a_cancelled_job_again_ends_it_discarded,
        control::rescue_ends_a_cancel_requested_job_and_its_blocking_queue_moves_on,
        control::retry_clears_a_cancel_request,
        wakeups::a_cancel_request_wakes_a_listener_on_another_connection,
        // unique jobs (insert_jobs, caller_insert)
        unique::a_duplicate_key_returns_the_existing_job_and_inserts_nothing,
        unique::a_batch_resolves_repeated_and_existing_keys_to_one_job_each,
        unique::a_finished_job_frees_its_key_unless_its_states_keep_it,
        unique::a_period_makes_the_key_unique_per_window,
        unique::a_caller_insert_of_a_taken_key_returns_the_existing_job,
        unique::concurrent_inserts_of_one_key_make_one_job,
        // next_run_in, notify, listen
        wakeups::next_run_in_is_none_when_no_job_waits,
        wakeups::next_run_in_counts_down_to_the_next_scheduled_or_retrying_job,
        wakeups::next_run_in_says_how_long_ago_the_latest_waiting_job_became_due,
        wakeups::an_insert_on_another_connection_wakes_a_listener,
        wakeups::notify_wakes_a_listener_on_another_connection,
        wakeups::listen_returns_once_stopped,
        // periodic_ticks, start_periodic, enqueue_tick
        periodic::workers_enqueueing_the_same_tick_at_once_insert_one_job,
        periodic::a_tick_is_enqueued_only_after_the_last_one,
        periodic::a_started_entry_enqueues_only_ticks_after_its_starting_point,
        periodic::periodic_ticks_read_the_database_clock_and_one_scope,
        periodic::a_ticks_job_is_an_ordinary_job_scheduled_at_its_tick,
        // migrate, creates_schema_on_first_use, close
        schema::migrate_is_idempotent,
        schema::migrate_applies_every_version_once_and_keeps_the_jobs,
        schema::concurrent_migrations_apply_each_version_once,
        schema::only_the_embedded_store_creates_its_schema_on_first_use,
        schema::a_closed_store_refuses_new_operations,
        schema::a_closed_store_fails_every_operation_within_a_moment,
    ],
    postgres_only: [
        // SQLite has no NOTIFY payload (any commit wakes) and no server session to lose.
        wakeups::a_notify_for_another_scope_does_not_wake_a_listener,
        wakeups::listen_reconnects_after_losing_its_connection,
        // SQLite runs one claim at a time: no claim meets another one placing heads.
        claim_finish::a_claim_that_meets_another_claimer_placing_heads_looks_again,
        claim_finish::a_claim_passes_over_a_head_another_claimer_holds,
    ],
}
