-- Payments that ended FAILED (PaymentFailed): a debit for one of them that
-- arrives late must not confirm a hold.
CREATE TABLE failed_payments (
    payment_id TEXT PRIMARY KEY
);
