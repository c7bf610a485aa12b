DROP INDEX queue_tokens_changes;
ALTER TABLE queue_tokens DROP COLUMN version;
ALTER TABLE queue_lines DROP COLUMN version;
