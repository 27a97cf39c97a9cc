-- A wrapped API's routing (API.md, "Routing: retries and fallbacks"): its targets, retries and
-- cooldown, as validated by the admin API (wrapx_core::routing::Routing). NULL: the API's own
-- provider and model, one attempt. A column rather than a table: it is read and written whole,
-- with the API's record, and versioned with the prompt in config_versions.config_snapshot.
ALTER TABLE wrapped_apis
    ADD COLUMN routing jsonb CHECK (routing IS NULL OR jsonb_typeof(routing) = 'object');
