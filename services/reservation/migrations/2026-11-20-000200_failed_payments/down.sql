DROP TABLE failed_payments;
