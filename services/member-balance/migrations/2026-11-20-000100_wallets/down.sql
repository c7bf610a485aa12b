DROP TABLE charge_requests; DROP TABLE ledger_entries; DROP TABLE wallets;
