-- The pass (its queue token) each hold was asked for with: a pass has at
-- most `reservation.max_live_per_pass` reservations PENDING or HELD at once.
-- Reservations from before have none and count for no pass.
ALTER TABLE reservations ADD COLUMN pass_token TEXT;
CREATE INDEX reservations_live_by_pass ON reservations (pass_token)
    WHERE status IN ('PENDING', 'HELD');
