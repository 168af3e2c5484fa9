-- The folded state the projector keeps in each read-model row (`state`) becomes `json` instead of `jsonb`.
-- It is written and read whole by the projector (one JSON text per row, every batch) and by the query API
-- (deserialized whole); nothing queries inside it. As `jsonb`, every write parsed it into a binary tree
-- with sorted keys and every read printed it back, which was a large share of the projector's CPU during
-- catch-up (measured with perf: key sorting and JSON escaping at the top of PostgreSQL's profile); `json`
-- is only validated on the way in and copied on the way out.
alter table rm_bookings alter column state type json using state::json;
alter table rm_visits alter column state type json using state::json;
alter table rm_status_items alter column state type json using state::json;
