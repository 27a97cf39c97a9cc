-- Wrap-X schema: the 18 tables of the product.
--
-- Conventions: UUID v7 ids made by the application (time-ordered, so b-tree inserts stay at
-- the right edge); timestamptz everywhere; jsonb for documents; numeric for money; every
-- foreign key says what happens on delete. Secrets are never stored in the clear: API keys and
-- session tokens as keyed BLAKE3 hashes (hex), provider keys as AEAD ciphertext.

CREATE EXTENSION IF NOT EXISTS citext;

-- Keeps updated_at current on every UPDATE.
CREATE FUNCTION wrapx_touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

-- 1. Accounts.
CREATE TABLE users (
    id              uuid PRIMARY KEY,
    email           citext NOT NULL,
    password_hash   text NOT NULL,
    name            text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    is_active       boolean NOT NULL DEFAULT true,
    is_admin        boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_email_key UNIQUE (email),
    CONSTRAINT users_email_shape CHECK (email ~ '^[^@\s]+@[^@\s]+$' AND char_length(email) <= 254)
);

-- 2. Projects group an account's wrapped APIs.
CREATE TABLE projects (
    id              uuid PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name            text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    description     text CHECK (char_length(description) <= 5000),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX projects_user_id_idx ON projects (user_id, id);

-- 3. The account's own provider credentials; the key is AEAD ciphertext bound to this row.
CREATE TABLE llm_providers (
    id              uuid PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider_name   text NOT NULL
                    CHECK (provider_name IN ('openai', 'anthropic', 'deepseek', 'openai_compatible')),
    display_name    text CHECK (char_length(display_name) <= 200),
    api_key_ciphertext text NOT NULL CHECK (api_key_ciphertext LIKE 'wxenc1:%'),
    api_key_hint    text NOT NULL CHECK (char_length(api_key_hint) <= 8),
    api_base_url    text CHECK (char_length(api_base_url) <= 2000),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT llm_providers_compatible_needs_url
        CHECK (provider_name <> 'openai_compatible' OR api_base_url IS NOT NULL)
);
CREATE INDEX llm_providers_user_id_idx ON llm_providers (user_id, id);

-- 4. A published model configuration with its public endpoint id.
CREATE TABLE wrapped_apis (
    id              uuid PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- A project or provider in use cannot be deleted out from under a live API. NO ACTION
    -- rather than RESTRICT: it is checked at the end of the statement, so deleting the user
    -- still cascades through projects, providers and wrapped APIs together.
    project_id      uuid NOT NULL REFERENCES projects (id) ON DELETE NO ACTION,
    provider_id     uuid NOT NULL REFERENCES llm_providers (id) ON DELETE NO ACTION,
    name            text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    endpoint_id     text NOT NULL CHECK (endpoint_id ~ '^ep_[a-z0-9]{20}$'),
    model           text NOT NULL CHECK (char_length(model) BETWEEN 1 AND 200),
    is_active       boolean NOT NULL DEFAULT true,
    system_message_policy text NOT NULL DEFAULT 'keep'
                    CHECK (system_message_policy IN ('keep', 'drop', 'reject')),
    max_tokens_cap  integer CHECK (max_tokens_cap > 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT wrapped_apis_endpoint_id_key UNIQUE (endpoint_id)
);
CREATE INDEX wrapped_apis_user_id_idx ON wrapped_apis (user_id, id);
CREATE INDEX wrapped_apis_project_id_idx ON wrapped_apis (project_id);
CREATE INDEX wrapped_apis_provider_id_idx ON wrapped_apis (provider_id);

-- 5. Keys the account hands to its customers: only the keyed hash is kept.
CREATE TABLE api_keys (
    id              uuid PRIMARY KEY,
    wrapped_api_id  uuid NOT NULL REFERENCES wrapped_apis (id) ON DELETE CASCADE,
    key_hash        text NOT NULL CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    key_hint        text NOT NULL CHECK (char_length(key_hint) <= 16),
    key_name        text NOT NULL CHECK (char_length(key_name) BETWEEN 1 AND 200),
    expires_at      timestamptz,
    is_active       boolean NOT NULL DEFAULT true,
    revoked_at      timestamptz,
    last_used_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT api_keys_key_hash_key UNIQUE (key_hash)
);
CREATE INDEX api_keys_wrapped_api_id_idx ON api_keys (wrapped_api_id, id);

-- 6. The current prompt configuration of a wrapped API (one per API).
CREATE TABLE prompt_configs (
    id              uuid PRIMARY KEY,
    wrapped_api_id  uuid NOT NULL REFERENCES wrapped_apis (id) ON DELETE CASCADE,
    role            text NOT NULL DEFAULT '' CHECK (char_length(role) <= 20000),
    instructions    text NOT NULL DEFAULT '' CHECK (char_length(instructions) <= 100000),
    rules           text NOT NULL DEFAULT '' CHECK (char_length(rules) <= 100000),
    behavior        text NOT NULL DEFAULT '' CHECK (char_length(behavior) <= 20000),
    tone            text NOT NULL DEFAULT '' CHECK (char_length(tone) <= 20000),
    -- [{"user": "...", "assistant": "..."}, ...]: few-shot turns.
    examples        jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(examples) = 'array'),
    current_version integer NOT NULL DEFAULT 1 CHECK (current_version > 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT prompt_configs_wrapped_api_id_key UNIQUE (wrapped_api_id)
);

-- 7. Tools an account defines (function definitions, the thinking switch, ...).
CREATE TABLE tools (
    id              uuid PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    tool_name       text NOT NULL CHECK (tool_name ~ '^[A-Za-z0-9_-]{1,64}$'),
    tool_type       text NOT NULL CHECK (tool_type IN ('function', 'thinking', 'web_search', 'code_interpreter')),
    tool_config     jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(tool_config) = 'object'),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tools_user_id_tool_name_key UNIQUE (user_id, tool_name)
);

-- 8. Which tools a wrapped API offers the model.
CREATE TABLE wrapped_api_tools (
    id              uuid PRIMARY KEY,
    wrapped_api_id  uuid NOT NULL REFERENCES wrapped_apis (id) ON DELETE CASCADE,
    tool_id         uuid NOT NULL REFERENCES tools (id) ON DELETE CASCADE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT wrapped_api_tools_once UNIQUE (wrapped_api_id, tool_id)
);
CREATE INDEX wrapped_api_tools_tool_id_idx ON wrapped_api_tools (tool_id);

-- 9. Signed webhook subscriptions.
CREATE TABLE webhooks (
    id              uuid PRIMARY KEY,
    wrapped_api_id  uuid NOT NULL REFERENCES wrapped_apis (id) ON DELETE CASCADE,
    url             text NOT NULL CHECK (url ~ '^https?://' AND char_length(url) <= 2000),
    -- Standard Webhooks secret (whsec_...): the worker must sign with it, so it is kept
    -- AEAD-encrypted like provider keys.
    secret_ciphertext text NOT NULL CHECK (secret_ciphertext LIKE 'wxenc1:%'),
    events          jsonb NOT NULL DEFAULT '["*"]' CHECK (jsonb_typeof(events) = 'array'),
    is_active       boolean NOT NULL DEFAULT true,
    disabled_reason text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_wrapped_api_id_idx ON webhooks (wrapped_api_id) WHERE is_active;

-- 10. The owner's playground conversations with a wrapped API.
CREATE TABLE chat_messages (
    id              uuid PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    wrapped_api_id  uuid NOT NULL REFERENCES wrapped_apis (id) ON DELETE CASCADE,
    message         text NOT NULL CHECK (char_length(message) <= 100000),
    response        text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chat_messages_wrapped_api_idx ON chat_messages (wrapped_api_id, id DESC);

-- 11. One row per gateway request that presented a valid key: the high-volume table.
-- No foreign keys on the hot columns: rows arrive in batches from the worker and must land
-- even after their key or API is deleted (usage history and billing outlive them). The
-- primary key includes created_at so the table can become a range partitioned by time
-- (PARTITION BY RANGE (created_at)) without changing the keys: every unique constraint of a
-- partitioned table must contain its partition key.
CREATE TABLE api_logs (
    id              uuid NOT NULL,
    request_id      uuid NOT NULL,
    wrapped_api_id  uuid NOT NULL,
    api_key_id      uuid NOT NULL,
    user_id         uuid NOT NULL,
    provider        text NOT NULL,
    model           text NOT NULL,
    status          smallint NOT NULL CHECK (status BETWEEN 100 AND 599),
    outcome         text NOT NULL CHECK (outcome IN ('completed', 'rejected', 'rate_limited', 'upstream_error', 'timeout', 'cancelled')),
    stream          boolean NOT NULL DEFAULT false,
    latency_ms      integer NOT NULL CHECK (latency_ms >= 0),
    ttfb_ms         integer CHECK (ttfb_ms >= 0),
    prompt_tokens   integer NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens integer NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
    reasoning_tokens integer NOT NULL DEFAULT 0 CHECK (reasoning_tokens >= 0),
    tokens_used     integer NOT NULL DEFAULT 0 CHECK (tokens_used >= 0),
    usage_source    text NOT NULL DEFAULT 'none' CHECK (usage_source IN ('reported', 'counted', 'none')),
    cost            numeric(18, 8) NOT NULL DEFAULT 0 CHECK (cost >= 0),
    request_data    jsonb,
    response_data   jsonb,
    error           text,
    config_version  integer,
    created_at      timestamptz NOT NULL,
    PRIMARY KEY (id, created_at)
);
-- The worker's idempotency key. Unique on its own while the table is not partitioned; a
-- partitioned api_logs keeps it unique with (request_id, created_at), since created_at is the
-- request's own time and a redelivery carries the same value.
CREATE UNIQUE INDEX api_logs_request_id_key ON api_logs (request_id);
CREATE INDEX api_logs_wrapped_api_created_idx ON api_logs (wrapped_api_id, created_at DESC, id DESC);
CREATE INDEX api_logs_user_created_idx ON api_logs (user_id, created_at DESC);
CREATE INDEX api_logs_api_key_idx ON api_logs (api_key_id, created_at DESC);

-- 12. Admin API sessions: tokens kept only as keyed hashes; a refresh rotates the pair, and
-- a spent refresh token presented again revokes the session (reuse detection).
CREATE TABLE sessions (
    id              uuid PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash      text NOT NULL CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    refresh_token_hash text NOT NULL CHECK (refresh_token_hash ~ '^[0-9a-f]{64}$'),
    -- The refresh token this one replaced: presenting it again is reuse.
    previous_refresh_token_hash text CHECK (previous_refresh_token_hash ~ '^[0-9a-f]{64}$'),
    expires_at      timestamptz NOT NULL,
    refresh_expires_at timestamptz NOT NULL,
    is_active       boolean NOT NULL DEFAULT true,
    revoked_reason  text,
    ip_address      inet,
    user_agent      text CHECK (char_length(user_agent) <= 1000),
    last_used_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sessions_token_hash_key UNIQUE (token_hash),
    CONSTRAINT sessions_refresh_token_hash_key UNIQUE (refresh_token_hash)
);
CREATE INDEX sessions_user_id_idx ON sessions (user_id, created_at DESC);
CREATE INDEX sessions_previous_refresh_idx ON sessions (previous_refresh_token_hash)
    WHERE previous_refresh_token_hash IS NOT NULL;

-- 13. Rate limit settings of a wrapped API, and the worker's running counters for the views.
CREATE TABLE rate_limits (
    id              uuid PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    wrapped_api_id  uuid NOT NULL REFERENCES wrapped_apis (id) ON DELETE CASCADE,
    "limit"         integer NOT NULL CHECK ("limit" > 0),
    window_seconds  integer NOT NULL DEFAULT 60 CHECK (window_seconds BETWEEN 1 AND 86400),
    requests_count  bigint NOT NULL DEFAULT 0 CHECK (requests_count >= 0),
    reset_at        timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT rate_limits_wrapped_api_id_key UNIQUE (wrapped_api_id)
);
CREATE INDEX rate_limits_user_id_idx ON rate_limits (user_id);

-- 14. Every saved prompt configuration, numbered per wrapped API.
CREATE TABLE config_versions (
    id              uuid PRIMARY KEY,
    prompt_config_id uuid NOT NULL REFERENCES prompt_configs (id) ON DELETE CASCADE,
    wrapped_api_id  uuid NOT NULL REFERENCES wrapped_apis (id) ON DELETE CASCADE,
    version         integer NOT NULL CHECK (version > 0),
    config_snapshot jsonb NOT NULL CHECK (jsonb_typeof(config_snapshot) = 'object'),
    restored_from   integer,
    created_by      uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT config_versions_version_key UNIQUE (wrapped_api_id, version)
);
CREATE INDEX config_versions_prompt_config_idx ON config_versions (prompt_config_id);

-- 15. What the account should know about: quota thresholds, failed webhooks, ...
CREATE TABLE notifications (
    id              uuid PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    wrapped_api_id  uuid REFERENCES wrapped_apis (id) ON DELETE SET NULL,
    type            text NOT NULL CHECK (char_length(type) BETWEEN 1 AND 100),
    title           text NOT NULL CHECK (char_length(title) <= 500),
    message         text NOT NULL CHECK (char_length(message) <= 5000),
    is_read         boolean NOT NULL DEFAULT false,
    metadata        jsonb NOT NULL DEFAULT '{}',
    -- Makes a notification raised twice for the same cause (a redelivered event) one row.
    dedup_key       text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT notifications_dedup_key UNIQUE (user_id, dedup_key)
);
CREATE INDEX notifications_user_idx ON notifications (user_id, id DESC);
CREATE INDEX notifications_unread_idx ON notifications (user_id) WHERE NOT is_read;

-- 16. The account's plan per billing period, with what has accrued.
CREATE TABLE billing (
    id              uuid PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    plan_type       text NOT NULL CHECK (plan_type IN ('free', 'starter', 'pro', 'enterprise')),
    status          text NOT NULL CHECK (status IN ('active', 'past_due', 'canceled', 'expired')),
    amount          numeric(18, 8) NOT NULL DEFAULT 0 CHECK (amount >= 0),
    currency        char(3) NOT NULL DEFAULT 'USD',
    period_start    timestamptz NOT NULL,
    requests_count  bigint NOT NULL DEFAULT 0 CHECK (requests_count >= 0),
    tokens_count    bigint NOT NULL DEFAULT 0 CHECK (tokens_count >= 0),
    monthly_quota_requests bigint CHECK (monthly_quota_requests > 0),
    payment_date    timestamptz,
    expires_at      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT billing_period_key UNIQUE (user_id, period_start),
    CONSTRAINT billing_period_order CHECK (expires_at > period_start)
);
CREATE INDEX billing_user_idx ON billing (user_id, period_start DESC);

-- 17. Append-only record of every change made through the admin API.
CREATE TABLE audit_logs (
    id              uuid PRIMARY KEY,
    -- Kept when the actor is deleted: the trail must outlive the account.
    user_id         uuid REFERENCES users (id) ON DELETE SET NULL,
    action          text NOT NULL CHECK (char_length(action) BETWEEN 1 AND 100),
    resource_type   text NOT NULL CHECK (char_length(resource_type) BETWEEN 1 AND 100),
    resource_id     uuid,
    ip_address      inet,
    user_agent      text CHECK (char_length(user_agent) <= 1000),
    details         jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_logs_user_idx ON audit_logs (user_id, id DESC);
CREATE INDEX audit_logs_resource_idx ON audit_logs (resource_type, resource_id);

-- Audit rows cannot be edited; removal only happens with their user (SET NULL) or by an
-- operator's retention job run as the table owner with the trigger disabled.
CREATE FUNCTION wrapx_audit_logs_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.user_id IS NULL AND OLD.user_id IS NOT NULL
       AND (NEW.action, NEW.resource_type, NEW.resource_id, NEW.details)
           IS NOT DISTINCT FROM (OLD.action, OLD.resource_type, OLD.resource_id, OLD.details) THEN
        RETURN NEW;  -- the ON DELETE SET NULL of the actor
    END IF;
    RAISE EXCEPTION 'audit_logs is append-only';
END;
$$;
CREATE TRIGGER audit_logs_append_only BEFORE UPDATE OR DELETE ON audit_logs
    FOR EACH ROW EXECUTE FUNCTION wrapx_audit_logs_append_only();

-- 18. Ratings of a wrapped API's answers.
CREATE TABLE feedback (
    id              uuid PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    wrapped_api_id  uuid NOT NULL REFERENCES wrapped_apis (id) ON DELETE CASCADE,
    request_id      uuid,
    rating          smallint NOT NULL CHECK (rating BETWEEN 1 AND 5),
    comment         text CHECK (char_length(comment) <= 5000),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX feedback_wrapped_api_idx ON feedback (wrapped_api_id, id DESC);

-- updated_at triggers.
CREATE TRIGGER users_touch BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION wrapx_touch_updated_at();
CREATE TRIGGER projects_touch BEFORE UPDATE ON projects FOR EACH ROW EXECUTE FUNCTION wrapx_touch_updated_at();
CREATE TRIGGER llm_providers_touch BEFORE UPDATE ON llm_providers FOR EACH ROW EXECUTE FUNCTION wrapx_touch_updated_at();
CREATE TRIGGER wrapped_apis_touch BEFORE UPDATE ON wrapped_apis FOR EACH ROW EXECUTE FUNCTION wrapx_touch_updated_at();
CREATE TRIGGER prompt_configs_touch BEFORE UPDATE ON prompt_configs FOR EACH ROW EXECUTE FUNCTION wrapx_touch_updated_at();
CREATE TRIGGER tools_touch BEFORE UPDATE ON tools FOR EACH ROW EXECUTE FUNCTION wrapx_touch_updated_at();
CREATE TRIGGER webhooks_touch BEFORE UPDATE ON webhooks FOR EACH ROW EXECUTE FUNCTION wrapx_touch_updated_at();
CREATE TRIGGER rate_limits_touch BEFORE UPDATE ON rate_limits FOR EACH ROW EXECUTE FUNCTION wrapx_touch_updated_at();
CREATE TRIGGER billing_touch BEFORE UPDATE ON billing FOR EACH ROW EXECUTE FUNCTION wrapx_touch_updated_at();
