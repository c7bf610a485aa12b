DROP INDEX reservations_live_by_pass;
ALTER TABLE reservations DROP COLUMN pass_token;
