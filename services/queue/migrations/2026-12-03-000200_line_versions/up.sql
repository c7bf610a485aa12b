-- A change number per line, so that an instance can learn what other
-- instances changed since it last looked: every commit that changes a
-- line's tokens raises the line's version while it holds the line's row,
-- and stamps the tokens it changed with the new number. Versions of one
-- line therefore commit in order, and "tokens with version > n" is
-- everything an instance that knew the line up to n has missed.
ALTER TABLE queue_lines ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE queue_tokens ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
CREATE INDEX queue_tokens_changes ON queue_tokens (concert_id, version);
