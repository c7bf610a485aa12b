-- Events waiting to leave, written in the same transaction as the state change.
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    partition_key TEXT NOT NULL,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    traceparent TEXT,
    created_at TIMESTAMP NOT NULL,
    sent_at TIMESTAMP
);
CREATE INDEX outbox_pending ON outbox (seq) WHERE sent_at IS NULL;
CREATE INDEX outbox_sent_at ON outbox (sent_at) WHERE sent_at IS NOT NULL;

-- Which consumer already applied which event: written with the effects.
CREATE TABLE processed_events (
    consumer TEXT NOT NULL,
    event_id TEXT NOT NULL,
    processed_at TIMESTAMP NOT NULL,
    PRIMARY KEY (consumer, event_id)
);

-- Who may publish the outbox now: one relay at a time keeps per-key order
-- even when two instances of a service share the database.
CREATE TABLE outbox_relay_lease (
    name TEXT PRIMARY KEY,
    holder TEXT,
    expires_at TIMESTAMP NOT NULL
);
INSERT INTO outbox_relay_lease (name, holder, expires_at) VALUES ('relay', NULL, '1970-01-01 00:00:00');
