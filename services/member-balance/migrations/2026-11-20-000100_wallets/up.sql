-- The balance is the sum of the ledger; both change in one transaction.
CREATE TABLE wallets (
    user_id TEXT PRIMARY KEY,
    balance BIGINT NOT NULL CHECK (balance >= 0),
    entry_count BIGINT NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

-- Append-only: rows are inserted, never updated or deleted.
CREATE TABLE ledger_entries (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    entry_no BIGINT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('CHARGE', 'PAYMENT_DEBIT', 'REFUND')),
    amount BIGINT NOT NULL CHECK (amount > 0),
    balance_after BIGINT NOT NULL CHECK (balance_after >= 0),
    reference TEXT,
    created_at TIMESTAMP NOT NULL,
    UNIQUE (user_id, entry_no)
);
-- One debit and at most one refund per payment, whatever is redelivered.
CREATE UNIQUE INDEX ledger_once_per_payment ON ledger_entries (kind, reference)
    WHERE kind IN ('PAYMENT_DEBIT', 'REFUND');

-- The first answer to each Idempotency-Key, replayed to retries.
CREATE TABLE charge_requests (
    user_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    amount BIGINT NOT NULL,
    entry_id TEXT NOT NULL,
    balance_after BIGINT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (user_id, idempotency_key)
);
