DROP TABLE payment_debits;
