DROP TABLE outbox_relay_lease;
DROP TABLE processed_events;
DROP TABLE outbox;
